import {
  type AttentionOptions,
  resolveAttentionProblem,
  type AttentionProblem,
} from '@attnkit/attention';
import {
  DeviceError,
  DTypeError,
  describe,
  encodeHalfArray,
  formatShape,
  ShapeError,
  sameShape,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import {
  allocF32,
  fa1Forward,
  fa2Backward,
  fa2Forward,
  flashAttentionBackwardWebGpu,
  flashAttentionWebGpu,
  nativeBackward,
  nativeEngine,
  nativeForward,
  planFlashTiles,
  requireNativeEngine,
  type WebGpuFlashOptions,
} from '@attnkit/skeleton';

export type {
  FlashTilePlan,
  FlashTileProblem,
  NativeTilePlan,
  NativeTileProblem,
  WebGpuFlashKernel,
  WebGpuFlashOptions,
  WebGpuFlashPlan,
  WebGpuPlanInput,
  WebGpuTileConfig,
} from '@attnkit/skeleton';
export {
  flashAttentionBackwardWebGpu,
  flashAttentionWebGpu,
  planFlashTiles,
  planNativeTiles,
  planWebGpuFlash,
  workspaceBytes,
} from '@attnkit/skeleton';

/** FA1 (Dao et al. 2022) or FA2 (Dao 2023) loop order; both are kept for the comparison. */
export type FlashAlgorithm = 'fa1' | 'fa2';
/**
 * Where the kernels run: 'ts' is the pure-TypeScript backend (runs everywhere); 'webgpu' the
 * WGSL kernels (tensors on webgpu, from @attnkit/webgpu's toWebGpu); 'native' the C++ FA2
 * kernels of @attnkit/native (cpu tensors, threads + SIMD).
 */
export type FlashBackend = 'ts' | 'webgpu' | 'native';

export interface FlashAttentionOptions extends AttentionOptions {
  /** Default 'fa2'. The backward of both is FA2's Algorithm 2 (same loop order as FA1's). */
  algorithm?: FlashAlgorithm;
  /** Query rows per tile (default: planFlashTiles). */
  blockQ?: number;
  /** Key rows per tile (default: planFlashTiles). */
  blockK?: number;
  /**
   * Default: 'webgpu' for webgpu tensors; for cpu tensors 'native' when @attnkit/native loads
   * (and the algorithm is FA2), else 'ts' (the native loader warns once why).
   */
  backend?: FlashBackend;
  /** webgpu backend: tile sizes per kernel instead of the planner's. */
  tiles?: WebGpuFlashOptions['tiles'];
  /** webgpu backend: times each kernel's pass with timestamp queries. */
  profiler?: WebGpuFlashOptions['profiler'];
}

export interface FlashAttentionResult {
  /** [B, Hq, Nq, Dv] (BHND) or [totalQ, Hq, Dv] (THD), in q's dtype. */
  o: Tensor;
  /** Natural-log LSE in f32: [B, Hq, Nq] (BHND) or [Hq, totalQ] (THD); -Infinity for a row
   * without keys. */
  lse: Tensor;
}

export interface FlashAttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
}

const BACKENDS: readonly string[] = ['ts', 'webgpu', 'native'];

interface Prepared {
  p: AttentionProblem;
  bq: number;
  bk: number;
  algorithm: FlashAlgorithm;
}

function checkTile(
  value: unknown,
  name: 'blockQ' | 'blockK',
  blockSparse: number | undefined,
): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw new ValueError(`${name}: expected a positive integer, got ${describe(value)}`, name);
  }
  if (blockSparse !== undefined && blockSparse % value !== 0) {
    throw new ValueError(
      `${name}: expected a divisor of blockSparse.${name} = ${blockSparse} (tiles may not straddle mask blocks), got ${value}`,
      name,
    );
  }
}

function prepare(q: Tensor, k: Tensor, v: Tensor, opts: unknown, backendName = 'ts'): Prepared {
  if (opts === null || typeof opts !== 'object') {
    throw new ValueError(`options: expected an object, got ${describe(opts)}`, 'options');
  }
  const options = opts as FlashAttentionOptions;
  const p = resolveAttentionProblem(q, k, v, options);
  const algorithm = options.algorithm ?? 'fa2';
  if (algorithm !== 'fa1' && algorithm !== 'fa2') {
    throw new ValueError(
      `algorithm: expected "fa1" or "fa2", got ${describe(algorithm)}`,
      'algorithm',
    );
  }
  const backend = options.backend ?? 'ts';
  if (!BACKENDS.includes(backend)) {
    throw new ValueError(
      `backend: expected one of ${BACKENDS.join(', ')}, got ${describe(backend)}`,
      'backend',
    );
  }
  checkTile(options.blockQ, 'blockQ', p.blockSparse?.blockQ);
  checkTile(options.blockK, 'blockK', p.blockSparse?.blockK);
  if (q.dtype === 'f64') {
    throw new DTypeError(
      'q: expected f32, f16 or bf16 (the kernels compute in f32), got f64; for float64 results use softmaxAttentionReference from @attnkit/attention',
      'q',
    );
  }
  if (q.device !== 'cpu') {
    throw new DeviceError(
      `q: expected a cpu tensor for the '${backendName}' backend, got one on ${q.device}`,
      'q',
    );
  }
  const plan = planFlashTiles({
    nq: p.maxSeqQ,
    nk: p.maxSeqK,
    d: p.d,
    dv: p.dv,
    blockSparse: p.blockSparse,
  });
  return {
    p,
    bq: Math.min(options.blockQ ?? plan.blockQ, Math.max(1, p.maxSeqQ)),
    bk: Math.min(options.blockK ?? plan.blockK, Math.max(1, p.maxSeqK)),
    algorithm,
  };
}

/** A tensor of `dtype` (f32 as is; f16/bf16 encoded from the f32 results). */
function output(data: Float32Array, shape: readonly number[], dtype: Tensor['dtype']): Tensor {
  if (dtype === 'f16' || dtype === 'bf16')
    return Tensor.from(encodeHalfArray(dtype, data), shape, dtype);
  return Tensor.from(data, shape);
}

/**
 * Softmax attention with the pure-TS FlashAttention kernels (synchronous). q [B, Hq, Nq, D],
 * k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (or THD with cuSeqlensQ/K) of dtype f32, f16 or bf16;
 * returns o in q's dtype and lse in f32. All KERNELS.md "Common" options apply.
 */
export function flashAttentionTs(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FlashAttentionOptions = {},
): FlashAttentionResult {
  const { p, bq, bk, algorithm } = prepare(q, k, v, options);
  const O = allocF32(
    p.oShape.reduce((a, x) => a * x, 1),
    'output',
  );
  const LSE = allocF32(
    p.lseShape.reduce((a, x) => a * x, 1),
    'output',
  );
  const kernel = algorithm === 'fa1' ? fa1Forward : fa2Forward;
  kernel(p, q.toFloat32Array(), k.toFloat32Array(), v.toFloat32Array(), O, LSE, bq, bk);
  return { o: output(O, p.oShape, q.dtype), lse: Tensor.from(LSE, p.lseShape) };
}

function checkLike(t: unknown, name: string, shape: readonly number[], dtype: string): Tensor {
  const tt = t as Tensor;
  if (!tt || typeof tt !== 'object' || !Array.isArray(tt.shape) || typeof tt.dtype !== 'string') {
    throw new ShapeError(`${name}: expected a Tensor, got ${describe(t)}`, name);
  }
  if (!sameShape(tt.shape, shape)) {
    throw new ShapeError(
      `${name}: expected shape ${formatShape(shape)}, got ${formatShape(tt.shape)}`,
      name,
    );
  }
  if (tt.dtype !== dtype)
    throw new DTypeError(`${name}: expected dtype ${dtype}, got ${tt.dtype}`, name);
  if (tt.device !== 'cpu') {
    throw new DeviceError(
      `${name}: expected a cpu tensor for the 'ts' backend, got one on ${tt.device}`,
      name,
    );
  }
  return tt;
}

/**
 * Gradients dq, dk, dv (in q's dtype) of the attention whose forward gave o and lse, for the
 * upstream gradient dO (shape and dtype of o; lse f32). FA1 and FA2 share this kernel: FA1's
 * backward already loops over K/V tiles outside and Q tiles inside, as FA2's Algorithm 2 does.
 */
export function flashAttentionBackwardTs(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: FlashAttentionOptions = {},
): FlashAttentionGrads {
  const { p, bq, bk } = prepare(q, k, v, options);
  checkLike(o, 'o', p.oShape, q.dtype);
  checkLike(lse, 'lse', p.lseShape, 'f32');
  checkLike(dO, 'dO', p.oShape, q.dtype);
  const dQ = allocF32(q.size, 'output');
  const dK = allocF32(k.size, 'output');
  const dV = allocF32(v.size, 'output');
  fa2Backward(
    p,
    q.toFloat32Array(),
    k.toFloat32Array(),
    v.toFloat32Array(),
    o.toFloat32Array(),
    lse.toFloat32Array(),
    dO.toFloat32Array(),
    dQ,
    dK,
    dV,
    bq,
    bk,
  );
  return {
    dq: output(dQ, q.shape, q.dtype),
    dk: output(dK, k.shape, q.dtype),
    dv: output(dV, v.shape, q.dtype),
  };
}

/** FlashAttention-2 forward on the native engine (cpu tensors; f16/bf16 computed in f32). */
export async function flashAttentionNative(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionResult> {
  const { p, algorithm } = prepare(q, k, v, options, 'native');
  checkNativeAlgorithm(algorithm);
  const engine = requireNativeEngine();
  const { o, lse } = await nativeForward(engine, p, q, k, v, options);
  return { o: output(o, p.oShape, q.dtype), lse: Tensor.from(lse, p.lseShape) };
}

/** FlashAttention-2 backward on the native engine (see flashAttentionBackwardTs). */
export async function flashAttentionBackwardNative(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionGrads> {
  const { p, algorithm } = prepare(q, k, v, options, 'native');
  checkNativeAlgorithm(algorithm);
  checkLike(o, 'o', p.oShape, q.dtype);
  checkLike(lse, 'lse', p.lseShape, 'f32');
  checkLike(dO, 'dO', p.oShape, q.dtype);
  const engine = requireNativeEngine();
  const g = await nativeBackward(engine, p, { q, k, v, o, lse, dO }, options);
  return {
    dq: output(g.dq, q.shape, q.dtype),
    dk: output(g.dk, k.shape, q.dtype),
    dv: output(g.dv, v.shape, q.dtype),
  };
}

function checkNativeAlgorithm(algorithm: FlashAlgorithm): void {
  if (algorithm !== 'fa2') {
    throw new ValueError(
      `algorithm: expected "fa2" with the native backend (it implements FA2 only), got ${describe(algorithm)}`,
      'algorithm',
    );
  }
}

/**
 * cpu tensors without a named backend: native when it loads and the algorithm is FA2 (the
 * native kernels' only one), else ts.
 */
function cpuDefault(options: FlashAttentionOptions): 'native' | 'ts' {
  const fa2 =
    options === null || typeof options !== 'object' || (options.algorithm ?? 'fa2') === 'fa2';
  return fa2 && nativeAvailable() ? 'native' : 'ts';
}

/** Whether the native engine loaded (if not, @attnkit/native has warned once why). */
export function nativeAvailable(): boolean {
  return nativeEngine() !== undefined;
}

/**
 * Backend-dispatching forward. Async because GPU backends read their results back
 * asynchronously; errors arrive as rejected promises.
 */
export async function flashAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionResult> {
  const backend = backendFor(q, options) ?? cpuDefault(options);
  if (backend === 'webgpu') return flashAttentionWebGpu(q, k, v, options);
  if (backend === 'native') return flashAttentionNative(q, k, v, options);
  return flashAttentionTs(q, k, v, options);
}

/** The backend named in options, else the one of q's device. */
function backendFor(q: Tensor, options: FlashAttentionOptions): string | undefined {
  if (options === null || typeof options !== 'object') return undefined;
  return options.backend ?? (q?.device === 'webgpu' ? 'webgpu' : undefined);
}

/** Backend-dispatching backward (see flashAttentionBackwardTs). */
export async function flashAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionGrads> {
  const backend = backendFor(q, options) ?? cpuDefault(options);
  if (backend === 'webgpu') {
    return flashAttentionBackwardWebGpu(q, k, v, o, lse, dO, options);
  }
  if (backend === 'native') return flashAttentionBackwardNative(q, k, v, o, lse, dO, options);
  return flashAttentionBackwardTs(q, k, v, o, lse, dO, options);
}

/**
 * Floating-point operations of one pass, as FlashAttention's benchmarks count them: two
 * matmuls forward, 2 * B * Hq * Nq * Nk * (D + Dv); backward 2.5x the forward (five matmuls
 * instead of two); halved when causal.
 */
export function flashFlops(
  p: {
    batch: number;
    hq: number;
    nq: number;
    nk: number;
    d: number;
    dv?: number;
    causal?: boolean;
  },
  pass: 'forward' | 'backward',
): number {
  if (p === null || typeof p !== 'object') {
    throw new ValueError(
      `p: expected { batch, hq, nq, nk, d, dv?, causal? }, got ${describe(p)}`,
      'p',
    );
  }
  const dims: Record<string, unknown> = {
    batch: p.batch,
    hq: p.hq,
    nq: p.nq,
    nk: p.nk,
    d: p.d,
    dv: p.dv ?? p.d,
  };
  for (const [name, value] of Object.entries(dims)) {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
      throw new ValueError(
        `${name}: expected a non-negative integer, got ${describe(value)}`,
        name,
      );
    }
  }
  const causal = p.causal ?? false;
  if (typeof causal !== 'boolean')
    throw new ValueError(`causal: expected a boolean, got ${describe(causal)}`, 'causal');
  if (pass !== 'forward' && pass !== 'backward') {
    throw new ValueError(`pass: expected "forward" or "backward", got ${describe(pass)}`, 'pass');
  }
  const dv = p.dv ?? p.d;
  const forward = 2 * p.batch * p.hq * p.nq * p.nk * (p.d + dv);
  return (pass === 'forward' ? forward : 2.5 * forward) * (causal ? 0.5 : 1);
}
