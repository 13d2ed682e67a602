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
   * Matmuls with few output tiles and a long K (weight gradients) split K across workgroups and
   * sum the slices in a second pass (default true); false runs each output tile over all of K.
   */
  splitK?: boolean;
  /**
   * A pass with nothing queued before it and a compiled pipeline is encoded as it is called,
   * and the first command buffer after an idle queue is submitted after 8 passes (default
   * true); false queues every pass and submits every 64 (for A/B measurements).
   */
  encodeEagerly?: boolean;
  /**
   * Uniform buffers and bind groups are reused across passes with the same words / buffers
   * (BindingCache: most of what a pass costs the host in Dawn's API; default true); false makes
   * both for every pass, for A/B measurements.
   */
  reuseBindings?: boolean;
}

/** Every kernel option and its default: the one list bindContext and the validation walk. */
export const KERNEL_OPTION_DEFAULTS: Readonly<Required<WebGpuKernelOptions>> = {
  tensorCores: true,
  splitK: true,
  encodeEagerly: true,
  reuseBindings: true,
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
  options = { ...KERNEL_OPTION_DEFAULTS };
  for (const name of Object.keys(options) as (keyof WebGpuKernelOptions)[])
    options[name] = opts[name] ?? KERNEL_OPTION_DEFAULTS[name];
}
