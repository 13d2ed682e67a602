import { DeviceError } from '@attnkit/tensor';
import type { WebGpuContext } from '@attnkit/webgpu';

let bound: WebGpuContext | undefined;

export interface WebGpuKernelOptions {
  /**
   * f16 matmuls on subgroup matrices (tensor cores) where the adapter has f16 x f16 -> f32
   * 16 x 16 x 16 and the dims tile by 16 (default true); false keeps the SIMT kernel.
   */
  tensorCores?: boolean;
  /**
   * The tensor-core matmul stages its A and B tiles through workgroup memory (where the
   * adapter's workgroup memory holds them) and rounds f16 results itself. 'unsplit' (the
   * default) stages every product except those whose K is split (weight gradients: their f32
   * slices are summed by a second pass anyway), which load their matrices straight from
   * storage: on the H200 those ran 1.92-1.94 ms against 2.13-2.15 staged for the block step's
   * six (BENCHMARKS.md, session 15). true stages all; false stages none and casts in a second
   * pass (the kernel before, for A/B measurements).
   */
  stageTensorCores?: boolean | 'unsplit';
  /**
   * Matmuls with few output tiles and a long K (weight gradients) split K across workgroups and
   * sum the slices in a second pass (default true); false runs each output tile over all of K.
   */
  splitK?: boolean;
  /**
   * A pass with nothing queued before it and a compiled pipeline is encoded as it is called,
   * and the first command buffer after an idle queue is submitted after 2 passes (default
   * true); false queues every pass and submits every 64 (for A/B measurements).
   */
  encodeEagerly?: boolean;
  /**
   * Uniform buffers and bind groups are reused across passes with the same words / buffers
   * (BindingCache: most of what a pass costs the host in Dawn's API; default true); false makes
   * both for every pass, for A/B measurements.
   */
  reuseBindings?: boolean;
  /**
   * Attention's passes (the FlashAttention-2 family's WGSL kernels) are encoded into the queue's
   * command encoder with the passes around it once its pipelines are compiled
   * (encodeFlashAttention), so that it and everything recorded after it can be encoded at once
   * while autograd records (default true); false runs every attention call as a queued async
   * task that submits on its own, which holds back all later work until the recording yields
   * (for A/B measurements).
   */
  recordAttention?: boolean;
  /**
   * Work encoded at once is submitted after 2 passes following an idle queue, then every 4, 8,
   * 16, 32, 64, so that the GPU starts on a step while autograd still records it; false (the
   * default since session 23) submits every 64 passes and when the recording yields. Early
   * submits never showed a gain (session 15: a first batch of 2 ran the block step 0.07-0.25 ms
   * faster than 8, within the noise; session 23: GPT-2 small's f16 training step 124.9 / 130.5
   * ms with them, 129.6 / 126.1 without) and cost decoding its six submits a token (~0.5 ms of
   * host each on the H200): GPT-2 small at 8K decoded 153.6 / 136.9 tokens/s with them and
   * 169.7 / 164.4 without, alternating processes (BENCHMARKS.md "GPT generation on the H200,
   * session 23").
   */
  earlySubmit?: boolean;
  /**
   * Consecutive dispatches of a command buffer share one compute pass (ended before a buffer
   * copy and at the submit; WebGPU orders a pass's dispatches as it orders passes, each its own
   * usage scope), which saves Dawn's begin and end of a pass per dispatch (default true); false
   * gives every dispatch a pass of its own, as a profiler's timestamps need (for A/B
   * measurements).
   */
  sharePasses?: boolean;
  /**
   * Where no gradient is recorded, Linear layers of a decoded token (at most 8 rows, f32) run
   * as one pass each with their bias and activation (an MLP's first layer and its gelu), and an
   * attention layer's q, k and v projections as one pass (nn's `linears`; default true); false
   * composes matmul, add and the activation (for A/B measurements).
   */
  fuseLinear?: boolean;
}

/** Every kernel option and its default: the one list bindContext and the validation walk. */
export const KERNEL_OPTION_DEFAULTS: Readonly<Required<WebGpuKernelOptions>> = {
  tensorCores: true,
  stageTensorCores: 'unsplit',
  splitK: true,
  encodeEagerly: true,
  reuseBindings: true,
  recordAttention: true,
  earlySubmit: false,
  sharePasses: true,
  fuseLinear: true,
};

let options: Required<WebGpuKernelOptions> = { ...KERNEL_OPTION_DEFAULTS };

export function kernelOptions(): Required<WebGpuKernelOptions> {
  return options;
}

/** The context registerWebGpuKernels bound the backend to (kernels without inputs allocate there). */
export function gpuContext(op: string): WebGpuContext {
  if (!bound)
    throw new DeviceError(
      `${op}: the webgpu kernels are not bound to a context (call registerWebGpuKernels(ctx))`,
      'ctx',
    );
  return bound;
}

export function bindContext(ctx: WebGpuContext, opts: WebGpuKernelOptions = {}): void {
  bound = ctx;
  options = { ...KERNEL_OPTION_DEFAULTS, ...definedOnly(opts) };
}

/** The options given, by the defaults' names (an explicit undefined keeps the default). */
function definedOnly(opts: WebGpuKernelOptions): WebGpuKernelOptions {
  const out: Record<string, unknown> = {};
  for (const name of Object.keys(KERNEL_OPTION_DEFAULTS) as (keyof WebGpuKernelOptions)[])
    if (opts[name] !== undefined) out[name] = opts[name];
  return out as WebGpuKernelOptions;
}
