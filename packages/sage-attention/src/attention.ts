import {
  type KernelRequest,
  type KernelTensors,
  registerKernel,
  selectKernel,
} from '@attnkit/attention';
import {
  disposeSageCodecGpu,
  encodeOutput,
  loadNativeBackend,
  nativeAvailable,
  quantizeSageNative,
  quantizeSageTs,
  quantizeSageWebGpu,
  sageForwardNative,
  sageForwardTs,
  sageForwardWebGpu,
  sageLseShiftTs,
} from '@attnkit/skeleton';
import { Tensor } from '@attnkit/tensor';
import { WebGpuStorage, webGpuStorageOf } from '@attnkit/webgpu';
import {
  type ResolvedSage,
  resolveSage,
  SAGE_BACKENDS,
  type SageAttentionOptions,
  type SageBackend,
  unsupportedOption,
} from './options.js';

/**
 * SageAttention2 (Zhang et al., 2024) forward on attnkit's backends, registered in the family x
 * backend registry as family 'sage' (forward only: it is an inference kernel). Every backend
 * runs the same two steps: the pre-pass (smoothing, per-group INT8/INT4 codes of Q and K,
 * per-channel int8 V) and the kernel (int32 Q·K, online softmax in f32, u8 P~ x int8 V in
 * int32), with the arithmetic of ARITHMETIC.md: 'ts' is its specification
 * (@attnkit/skeleton quantizeSageTs / sageForwardTs on the skeleton's FA2 loop), 'native' and
 * 'webgpu' are tested against it.
 */

type GpuBuffer = WebGpuStorage['buffer'];

/** Inputs as contiguous BHND f32 (f16/bf16 widened exactly; BSHD transposed). */
function bhndF32(t: Tensor, layout: ResolvedSage['layout']): Float32Array {
  return (layout === 'BSHD' ? t.permute([0, 2, 1, 3]) : t).toFloat32Array();
}

/** [B, H, N, W] row-major data -> a tensor in `layout` (BSHD: transposed, made contiguous). */
function fromBhnd(data: Float32Array, r: ResolvedSage, w: number, dtype: Tensor['dtype']): Tensor {
  const { batch, hq, nq } = r.dims;
  const t = encodeOutput(data, [batch, hq, nq, w], dtype);
  return r.layout === 'BSHD' ? t.permute([0, 2, 1, 3]).contiguous() : t;
}

function lseTensor(lse: Float32Array | undefined, r: ResolvedSage): Tensor | undefined {
  if (!lse) return undefined;
  const { batch, hq, nq } = r.dims;
  return Tensor.from(lse, [batch, hq, nq]);
}

async function runCpu(
  backend: 'ts' | 'native',
  q: Tensor,
  k: Tensor,
  v: Tensor,
  r: ResolvedSage,
): Promise<KernelTensors> {
  const Q = bhndF32(q, r.layout);
  const K = bhndF32(k, r.layout);
  const V = bhndF32(v, r.layout);
  let res: { o: Float32Array; lse?: Float32Array };
  if (backend === 'ts') {
    res = sageForwardTs(quantizeSageTs(Q, K, V, r.dims, r.config), {
      ...r.kernel,
      returnLse: r.returnLse,
    });
  } else {
    const codec = await quantizeSageNative(Q, K, V, r.dims, r.config, { isa: r.isa });
    res = await sageForwardNative(codec, {
      ...r.kernel,
      returnLse: r.returnLse,
      isa: r.isa,
      threads: r.threads,
    });
  }
  const out: KernelTensors = { o: fromBhnd(res.o, r, r.dims.dv, q.dtype) };
  if (r.returnLse && res.lse) {
    // ARITHMETIC.md "LSE": of the original scores (the kernels saw smoothed K).
    if (r.config.smoothK) sageLseShiftTs(res.lse, Q, K, r.dims, r.kernel.scale);
    out.lse = lseTensor(res.lse, r)!;
  }
  return out;
}

async function runWebGpu(q: Tensor, k: Tensor, v: Tensor, r: ResolvedSage): Promise<KernelTensors> {
  // Whole contiguous buffers (typed errors naming the tensor otherwise).
  const storage = webGpuStorageOf;
  const sq = storage(q, 'q');
  const ctx = sq.ctx;
  const codec = await quantizeSageWebGpu(
    ctx,
    sq.buffer,
    storage(k, 'k').buffer,
    storage(v, 'v').buffer,
    r.dims,
    r.config,
    q.dtype as 'f32' | 'f16' | 'bf16',
  );
  try {
    const res = await sageForwardWebGpu(ctx, codec, {
      ...r.kernel,
      returnLse: r.returnLse,
      ...(r.tensorCores !== undefined ? { tensorCores: r.tensorCores } : {}),
      // ARITHMETIC.md "LSE": of the original scores (a pass on the GPU adds scale q . km).
      ...(r.returnLse && r.config.smoothK
        ? { lseShift: { q: sq.buffer, dtype: q.dtype as 'f32' | 'f16' | 'bf16' } }
        : {}),
    });
    const { batch, hq, nq, dv } = r.dims;
    const wrap = (b: GpuBuffer, shape: number[]) =>
      new Tensor(
        new WebGpuStorage(
          ctx,
          'f32',
          shape.reduce((a, x) => a * x, 1),
          b,
        ),
        shape,
      );
    const out: KernelTensors = { o: wrap(res.o, [batch, hq, nq, dv]) };
    if (res.lse) out.lse = wrap(res.lse, [batch, hq, nq]);
    return out;
  } finally {
    disposeSageCodecGpu(ctx, codec);
  }
}

const DEVICES: Record<SageBackend, { priority: number; devices: string[] }> = {
  webgpu: { priority: 30, devices: ['webgpu'] },
  native: { priority: 20, devices: ['cpu'] },
  ts: { priority: 10, devices: ['cpu'] },
};

function available(backend: SageBackend): true | string {
  return backend === 'native' ? nativeAvailable() : true;
}

/** Why `backend` declines these options (other families' options, WebGPU's limits), else true. */
function supports(backend: SageBackend, req: KernelRequest): true | string {
  const no = unsupportedOption(req.options);
  if (no) return no.why;
  if (backend === 'webgpu') {
    if (req.options.layout === 'BSHD')
      return 'the WebGPU Sage kernels read BHND buffers (use layout "BHND" or the cpu backends)';
  }
  if (backend !== 'native' && (req.options.isa !== undefined || req.options.threads !== undefined))
    return 'isa and threads are options of the native backend';
  return true;
}

async function run(
  backend: SageBackend,
  t: KernelTensors,
  options: unknown,
): Promise<KernelTensors> {
  const r = resolveSage(t.q!, t.k!, t.v!, options);
  return backend === 'webgpu'
    ? runWebGpu(t.q!, t.k!, t.v!, r)
    : runCpu(backend, t.q!, t.k!, t.v!, r);
}

for (const backend of SAGE_BACKENDS) {
  registerKernel({
    family: 'sage',
    pass: 'forward',
    backend,
    ...DEVICES[backend],
    available: () => available(backend),
    supports: (req) => supports(backend, req),
    // lse only with returnLse (an inference kernel: o is what the callers compare).
    outputs: ['o'],
    run: (t, options) => run(backend, t, options),
  });
}

/**
 * SageAttention2 forward: O = softmax(scale Q K^T (masked)) V with Q·K in INT8 or INT4 after
 * smoothing, P~ and V in 8 bit, integer accumulation (ARITHMETIC.md). q [B, Hq, Nq, D],
 * k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (BHND; or [B, N, H, D] with layout 'BSHD'), f32, f16
 * or bf16; D and Dv multiples of 16 in [16, 256]; GQA, Nq != Nk,
 * causal (bottom-right) and window. Returns o in q's layout (cpu: q's dtype; webgpu: f32) and,
 * with returnLse, lse [B, Hq, Nq] f32. The backend follows the inputs' device unless
 * `backend` names one.
 */
export async function sageAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: SageAttentionOptions = {},
): Promise<{ o: Tensor; lse?: Tensor }> {
  const r = resolveSage(q, k, v, options);
  if (q.device === 'cpu' && (r.backend === undefined || r.backend === 'native'))
    await loadNativeBackend();
  const reg = selectKernel(
    {
      family: 'sage',
      pass: 'forward',
      device: q.device,
      dtype: q.dtype,
      options: options as Record<string, unknown>,
    },
    r.backend,
  );
  const out = await reg.run({ q, k, v }, options as Record<string, unknown>);
  return r.returnLse ? { o: out.o!, lse: out.lse! } : { o: out.o! };
}
