import type { AttentionProblem } from '@attnkit/attention';
import {
  checkFiniteValues,
  defineTiledFamily,
  loadNativeBackend,
  type TiledFamily,
  type TiledOptions,
  tiledBackwardTs,
  tiledForwardTs,
  type WebGpuEncodeTarget,
} from '@attnkit/skeleton';
import { DTypeError, describe, type Tensor, ValueError } from '@attnkit/tensor';

export type {
  FlashTilePlan,
  FlashTileProblem,
  NativeTilePlan,
  NativeTileProblem,
  WebGpuEncodeTarget,
  WebGpuFlashKernel,
  WebGpuFlashPlan,
  WebGpuPlanInput,
  WebGpuTileConfig,
} from '@attnkit/skeleton';
export {
  loadNativeBackend,
  NATIVE_INSTALL_COMMAND,
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

export interface FlashAttentionOptions extends TiledOptions {
  /**
   * Attention sinks (as gpt-oss): one logit per query head (length Hq) that joins every row's
   * softmax with a zero value vector, LSE_i = log(sum_j e^S_ij + e^sink_h). The backward
   * returns dsinks.
   */
  sinks?: Float32Array | readonly number[];
}

/** The options of the webgpu backend: the same object (tiles and profiler are part of it). */
export type WebGpuFlashOptions = FlashAttentionOptions;

export interface FlashAttentionResult {
  /** [B, Hq, Nq, Dv] (BHND) or [totalQ, Hq, Dv] (THD), in q's dtype. */
  o: Tensor;
  /** Natural-log LSE in f32: [B, Hq, Nq] (BHND) or [Hq, totalQ] (THD); -Infinity for a row
   * without keys (the sink's logit with sinks). */
  lse: Tensor;
}

export interface FlashAttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  /** With `sinks`: d loss / d sink, f32 [Hq]. */
  dsinks?: Tensor;
  /** With `scoreBias(bias, { grad: true })`: d loss / d bias, f32 in the bias's shape. */
  dbias?: Tensor;
}

function softmaxHook(p: AttentionProblem, options: FlashAttentionOptions) {
  const s = options.sinks as unknown;
  if (s === undefined) return { kind: 'softmax' as const };
  if (!(s instanceof Float32Array) && !Array.isArray(s)) {
    throw new ValueError(
      `sinks: expected a Float32Array or number[] of length Hq = ${p.hq}, got ${describe(s)}`,
      'sinks',
    );
  }
  const sinks = Float32Array.from(s as ArrayLike<number>);
  if (sinks.length !== p.hq) {
    throw new ValueError(
      `sinks: expected length Hq = ${p.hq}, got length ${sinks.length}`,
      'sinks',
    );
  }
  if (!sinks.every(Number.isFinite))
    throw new ValueError(`sinks: expected finite logits, got ${describe(s)}`, 'sinks');
  return { kind: 'softmax' as const, sinks };
}

/**
 * Softmax attention (FlashAttention) on the skeleton: this family is its hook (softmax, with
 * optional sinks) and its registrations (ts, native, webgpu); the loops are the skeleton's.
 */
const family = defineTiledFamily<FlashAttentionOptions>({
  family: 'softmax',
  normalize: softmaxHook,
  extraOptions: ['sinks'],
  forwardOutputs: ['o', 'lse'],
});

/**
 * The family's dispatcher (resolve, forward, backward, and the synchronous WebGPU encoders):
 * what a layer that runs attention synchronously builds on (@attnkit/nn runs resolve's problem
 * and hooks on the skeleton's TS and native kernels itself, and queues encodeForward /
 * encodeBackward on WebGPU). The functions below are the user-facing entry points.
 */
export const flashAttentionFamily: TiledFamily<FlashAttentionOptions> = family;

function f64Guard(q: unknown): void {
  if (q && (q as Tensor).dtype === 'f64') {
    throw new DTypeError(
      'q: expected f32, f16 or bf16 (the kernels compute in f32), got f64; for float64 results use softmaxAttentionReference from @attnkit/attention',
      'q',
    );
  }
}

/**
 * Softmax attention: FlashAttention-2 (or FA1's loop order with `algorithm: 'fa1'`, ts only).
 * q [B, Hq, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv] (or THD with cuSeqlensQ/K); every
 * option of KERNELS.md "Common", score mods (softcap, ALiBi, bias, custom), mask mods and sinks.
 * The backend follows the inputs' device (webgpu tensors: WGSL; cpu: native when its addon
 * loads, else TS) unless `backend` names one; a combination a backend cannot run is an
 * UnsupportedError saying why. Async: errors arrive as rejected promises.
 */
export async function flashAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionResult> {
  f64Guard(q);
  return (await family.forward(q, k, v, options)) as FlashAttentionResult;
}

/**
 * Gradients dq, dk, dv (in q's dtype; dsinks with sinks) of the attention whose forward gave o
 * and lse, for the upstream gradient dO. FA1 and FA2 share the backward: FA1's already loops
 * over K/V tiles outside and Q tiles inside, as FA2's Algorithm 2 does.
 */
export async function flashAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionGrads> {
  f64Guard(q);
  return family.backward(q, k, v, o, lse, dO, options);
}

/**
 * flashAttention on webgpu tensors, synchronously, for callers that record GPU work in order
 * and cannot await (@attnkit/nn's queue): the kernel's compute steps are handed to
 * `target.sink` to encode into the caller's own command encoder and submit with its other
 * work, and the results are written into `target.outputs` (o, lse) where given. Returns
 * undefined, having made nothing, whenever only the async flashAttention can run the call:
 * pipelines not compiled yet (the async call compiles them; later calls find them), cpu
 * tensors or another backend, `checkFinite`, split-K / stream-K launches (decode-sized or not). Typed
 * errors as flashAttention, thrown.
 *
 * The sink also receives the launch's scratch buffers (uniforms, tables): the caller releases
 * them to the context's pool once it has submitted the steps (WebGpuEncodeTarget).
 *
 * @example
 * const r = encodeFlashAttention(q, k, v, { causal: true }, {
 *   sink: (steps, scratch) => myQueue.encode(steps, () => scratch.forEach((b) => ctx.pool.release(b))),
 * })
 *   ?? (await flashAttention(q, k, v, { causal: true }));
 */
export function encodeFlashAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FlashAttentionOptions,
  target: WebGpuEncodeTarget,
): FlashAttentionResult | undefined {
  f64Guard(q);
  return family.encodeForward(q, k, v, options, target) as FlashAttentionResult | undefined;
}

/** flashAttentionBackward likewise (undefined also with sinks or a broadcast bias's gradient: read-backs). */
export function encodeFlashAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: FlashAttentionOptions,
  target: WebGpuEncodeTarget,
): FlashAttentionGrads | undefined {
  f64Guard(q);
  return family.encodeBackward(q, k, v, o, lse, dO, options, target) as
    | FlashAttentionGrads
    | undefined;
}

/** flashAttention on the pure-TS kernels, synchronously (cpu tensors). */
export function flashAttentionTs(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FlashAttentionOptions = {},
): FlashAttentionResult {
  f64Guard(q);
  const { p, hooks } = family.resolve(q, k, v, options);
  checkFiniteValues('forward', { q, k, v }, options);
  return tiledForwardTs(p, hooks, q, k, v, options) as FlashAttentionResult;
}

/** flashAttentionBackward on the pure-TS kernels, synchronously. */
export function flashAttentionBackwardTs(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: FlashAttentionOptions = {},
): FlashAttentionGrads {
  f64Guard(q);
  const { p, hooks } = family.resolve(q, k, v, options);
  checkFiniteValues('backward', { q, k, v, o, lse, do: dO }, options);
  return tiledBackwardTs(p, hooks, q, k, v, o, lse, dO, options);
}

const withBackend = (options: FlashAttentionOptions, backend: FlashBackend) => {
  if (options === null || typeof options !== 'object')
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  return { ...options, backend };
};

/** flashAttention with `backend: 'native'`. */
export function flashAttentionNative(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionResult> {
  return flashAttention(q, k, v, withBackend(options, 'native'));
}

/** flashAttentionBackward with `backend: 'native'`. */
export function flashAttentionBackwardNative(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionGrads> {
  return flashAttentionBackward(q, k, v, o, lse, dO, withBackend(options, 'native'));
}

/** flashAttention with `backend: 'webgpu'`. */
export function flashAttentionWebGpu(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionResult> {
  return flashAttention(q, k, v, withBackend(options, 'webgpu'));
}

/** flashAttentionBackward with `backend: 'webgpu'`. */
export function flashAttentionBackwardWebGpu(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: FlashAttentionOptions = {},
): Promise<FlashAttentionGrads> {
  return flashAttentionBackward(q, k, v, o, lse, dO, withBackend(options, 'webgpu'));
}

/**
 * Whether the native engine is available (if not, @attnkit/native has warned once why, and
 * `loadNativeBackend()` resolves to the reason). The optional @attnkit/native is imported
 * lazily, so this imports it first: a synchronous answer before that import could only say "not
 * yet", which reads as "no".
 */
export async function nativeAvailable(): Promise<boolean> {
  return (await loadNativeBackend()) === true;
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
