import {
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  ShapeError,
  sameShape,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';
import { GLA_CHUNK_SIZE, type GlaSequence, glaSequences, isPowerOfTwo } from './plan.js';

/**
 * Options of the GLA functions, with fla's argument names (fla/ops/gla: scale, initial_state,
 * output_final_state, cu_seqlens, chunk_size, reverse) in attnkit's camelCase.
 *
 * Layout BTHK: q, k and gk are [B, T, H, K], v is [B, T, H, V] (K != V allowed); o is
 * [B, T, H, V]; states h0, hT, dh0 and dht are [N, H, K, V] with N = B, or with `cuSeqlens`
 * (B = 1, sequences packed along T) N = cuSeqlens.length - 1.
 */
export interface GlaOptions {
  /** Multiplies q (o_t = (scale q_t) S_t). Default K^-0.5. */
  scale?: number;
  /** h0 [N, H, K, V], the state before each sequence's first token; zero when absent. */
  initialState?: Tensor;
  /** Also return the state after each sequence's last token, `finalState` [N, H, K, V]. */
  outputFinalState?: boolean;
  /**
   * Variable-length batches as fla and FlashAttention: B = 1 and sequence n is rows
   * [cuSeqlens[n], cuSeqlens[n+1]) of T (int32 offsets, 0 first, T last, non-decreasing; an
   * empty sequence is allowed and leaves its state at h0).
   */
  cuSeqlens?: Int32Array | readonly number[];
  /** 'ts' | 'native' | 'webgpu' (a registered backend); default: the inputs' device decides. */
  backend?: string;
}

export interface ChunkGlaOptions extends GlaOptions {
  /** C: tokens per chunk, a power of two (default 64, fla's). */
  chunkSize?: number;
  /**
   * WebGPU only: the chunk products on f16 subgroup matrices (true; a ValueError where the
   * adapter or K / V do not allow it), the SIMT tile loops (false), or 'auto' (default: SIMT
   * until the tensor-core kernels pass verification on a device; see the README). Ignored on
   * the cpu backends.
   */
  tensorCores?: boolean | 'auto';
}

export interface FusedRecurrentGlaOptions extends GlaOptions {
  /** Run each sequence from its last token to its first (fla's `reverse`). */
  reverse?: boolean;
}

/** The forms, as the registry's `form` option names them. */
export type GlaForm = 'chunk' | 'recurrent';

/** What every backend gets after validation: dimensions, the sequences and the resolved options. */
export interface GlaProblem {
  form: GlaForm;
  B: number;
  T: number;
  H: number;
  K: number;
  V: number;
  /** Number of sequences (states): B, or cuSeqlens.length - 1. */
  N: number;
  scale: number;
  seqs: GlaSequence[];
  /** Chunk form only (else GLA_CHUNK_SIZE). */
  chunkSize: number;
  /** Recurrent form only (else false). */
  reverse: boolean;
  outputFinalState: boolean;
  initialState: Tensor | undefined;
  /** Validated offsets, when given. */
  cuSeqlens: Int32Array | undefined;
}

const COMMON_KEYS = ['scale', 'initialState', 'outputFinalState', 'cuSeqlens', 'backend', 'form'];
const FORM_KEYS: Record<GlaForm, string> = { chunk: 'chunkSize', recurrent: 'reverse' };
const FORM_FUNCTION: Record<GlaForm, string> = {
  chunk: 'chunkGla',
  recurrent: 'fusedRecurrentGla',
};

/** `argument: expected <expected>, got <got>`; `got` is text (describe() a user's value). */
function fail(Err: typeof ValueError, argument: string, expected: string, got: string): never {
  throw new Err(`${argument}: expected ${expected}, got ${got}`, argument);
}

const FLOAT_DTYPES = ['f32', 'f16', 'bf16', 'f64'];

/** A Tensor by shape, not by class: a second copy of @attnkit/tensor (two bundles) is fine. */
function isTensor(t: unknown): t is Tensor {
  const x = t as Tensor;
  return (
    !!x &&
    typeof x === 'object' &&
    Array.isArray(x.shape) &&
    typeof x.dtype === 'string' &&
    typeof x.device === 'string' &&
    typeof x.toFloat32Array === 'function'
  );
}

function checkTensor(t: unknown, name: string, device: string | undefined): Tensor {
  if (!isTensor(t)) fail(ShapeError, name, 'a Tensor', describe(t));
  if (!FLOAT_DTYPES.includes(t.dtype))
    fail(DTypeError, name, 'dtype f32, f16 or bf16 (f64 on the ts backend)', t.dtype);
  if (device !== undefined && t.device !== device)
    fail(DeviceError, name, `a tensor on ${device} (as q)`, `one on ${t.device}`);
  return t;
}

function checkShape(t: Tensor, name: string, want: readonly number[], dims: string): void {
  if (!sameShape(t.shape, want))
    fail(ShapeError, name, `shape ${formatShape(want)} ${dims}`, `shape ${formatShape(t.shape)}`);
}

function checkCuSeqlens(cu: unknown, B: number, T: number): Int32Array {
  if (!(cu instanceof Int32Array) && !Array.isArray(cu))
    fail(ValueError, 'cuSeqlens', 'an Int32Array or number[] of cumulative offsets', describe(cu));
  const a = cu as ArrayLike<number>;
  if (a.length < 2) fail(ValueError, 'cuSeqlens', 'at least 2 offsets (0 and T)', describe(cu));
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    if (!Number.isInteger(x) || x < 0 || x > T)
      fail(ValueError, 'cuSeqlens', `integers in [0, T = ${T}]`, `${describe(x)} at index ${i}`);
    if (i > 0 && x < a[i - 1]!)
      fail(
        ValueError,
        'cuSeqlens',
        'non-decreasing offsets',
        `${x} after ${a[i - 1]} at index ${i}`,
      );
  }
  if (a[0] !== 0) fail(ValueError, 'cuSeqlens', 'first offset 0', describe(a[0]));
  if (a[a.length - 1] !== T)
    fail(
      ValueError,
      'cuSeqlens',
      `last offset T = ${T} (every row in a sequence)`,
      String(a[a.length - 1]),
    );
  if (B !== 1)
    fail(ValueError, 'cuSeqlens', 'B = 1 (sequences packed along T, as fla)', `B = ${B}`);
  return Int32Array.from(a);
}

/**
 * Validates a GLA call (shapes, dtypes, devices, options; not the gate values, which need the
 * data: checkGateValues) and resolves it. Typed errors name the argument, what was expected and
 * what came. `grads` checks the backward's dO [B, T, H, V] and dht [N, H, K, V].
 */
export function resolveGla(
  q: unknown,
  k: unknown,
  v: unknown,
  gk: unknown,
  options: unknown,
  form: GlaForm,
  grads?: { dO: unknown; dht?: unknown },
): GlaProblem {
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    fail(ValueError, 'options', 'an object', describe(options));
  const o = options as Record<string, unknown>;
  // tensorCores: the webgpu chunk kernels' choice of products (validated there; the cpu
  // backends have one kind of product and ignore it).
  const allowed = [...COMMON_KEYS, FORM_KEYS[form], ...(form === 'chunk' ? ['tensorCores'] : [])];
  for (const [key, value] of Object.entries(o)) {
    if (value === undefined || allowed.includes(key)) continue;
    const other = (Object.keys(FORM_KEYS) as GlaForm[]).find((f) => FORM_KEYS[f] === key);
    if (other)
      fail(
        ValueError,
        key,
        `no ${key} for ${FORM_FUNCTION[form]} (it is an option of ${FORM_FUNCTION[other]})`,
        describe(value),
      );
    fail(ValueError, `options.${key}`, `one of ${allowed.join(', ')}`, 'an unknown option');
  }
  const qq = checkTensor(q, 'q', undefined);
  const device = qq.device;
  if (qq.shape.length !== 4)
    fail(ShapeError, 'q', 'rank 4 [B, T, H, K] (layout BTHK)', `shape ${formatShape(qq.shape)}`);
  const [B, T, H, K] = qq.shape as [number, number, number, number];
  const kk = checkTensor(k, 'k', device);
  const vv = checkTensor(v, 'v', device);
  const gg = checkTensor(gk, 'gk', device);
  checkShape(kk, 'k', qq.shape, '[B, T, H, K] (as q)');
  checkShape(gg, 'gk', qq.shape, '[B, T, H, K] (as q)');
  if (vv.shape.length !== 4 || vv.shape[0] !== B || vv.shape[1] !== T || vv.shape[2] !== H)
    fail(
      ShapeError,
      'v',
      `shape [${B}, ${T}, ${H}, V] (B, T, H as q)`,
      `shape ${formatShape(vv.shape)}`,
    );
  const V = vv.shape[3]!;
  if (H === 0 || K === 0)
    fail(ShapeError, 'q', 'H >= 1 and K >= 1', `shape ${formatShape(qq.shape)}`);
  if (V === 0) fail(ShapeError, 'v', 'V >= 1', `shape ${formatShape(vv.shape)}`);
  for (const [t, name] of [
    [kk, 'k'],
    [vv, 'v'],
  ] as const) {
    if (t.dtype !== qq.dtype) fail(DTypeError, name, `dtype ${qq.dtype} (as q)`, t.dtype);
  }
  let scale = 1 / Math.sqrt(K);
  if (o.scale !== undefined) {
    if (typeof o.scale !== 'number' || !Number.isFinite(o.scale))
      fail(ValueError, 'scale', 'a finite number', describe(o.scale));
    scale = o.scale;
  }
  if (o.outputFinalState !== undefined && typeof o.outputFinalState !== 'boolean')
    fail(ValueError, 'outputFinalState', 'a boolean', describe(o.outputFinalState));
  if (o.backend !== undefined && typeof o.backend !== 'string')
    fail(ValueError, 'backend', 'a backend name (ts, native, webgpu)', describe(o.backend));
  if (o.form !== undefined && o.form !== form)
    fail(ValueError, 'form', `"${form}" for ${FORM_FUNCTION[form]}`, describe(o.form));
  const cuSeqlens = o.cuSeqlens === undefined ? undefined : checkCuSeqlens(o.cuSeqlens, B, T);
  const seqs = glaSequences(B, T, cuSeqlens);
  const N = seqs.length;
  let chunkSize = GLA_CHUNK_SIZE;
  if (form === 'chunk' && o.chunkSize !== undefined) {
    if (!isPowerOfTwo(o.chunkSize as number))
      fail(ValueError, 'chunkSize', 'a power of two (16, 32, 64, ...)', describe(o.chunkSize));
    chunkSize = o.chunkSize as number;
  }
  let reverse = false;
  if (form === 'recurrent' && o.reverse !== undefined) {
    if (typeof o.reverse !== 'boolean')
      fail(ValueError, 'reverse', 'a boolean', describe(o.reverse));
    reverse = o.reverse;
  }
  const stateShape = [N, H, K, V];
  const stateDims = `[N, H, K, V] (N = ${cuSeqlens ? 'cuSeqlens.length - 1' : 'B'} sequences)`;
  let initialState: Tensor | undefined;
  if (o.initialState !== undefined) {
    initialState = checkTensor(o.initialState, 'initialState', device);
    checkShape(initialState, 'initialState', stateShape, stateDims);
  }
  if (grads) {
    const dO = checkTensor(grads.dO, 'dO', device);
    checkShape(dO, 'dO', vv.shape, '[B, T, H, V] (as o)');
    if (grads.dht !== undefined) {
      const dht = checkTensor(grads.dht, 'dht', device);
      checkShape(dht, 'dht', stateShape, stateDims);
    }
  }
  return {
    form,
    B,
    T,
    H,
    K,
    V,
    N,
    scale,
    seqs,
    chunkSize,
    reverse,
    outputFinalState: o.outputFinalState === true,
    initialState,
    cuSeqlens,
  };
}

/**
 * Gates are log-space decays: gk = log(alpha) with alpha in (0, 1], so every element must be
 * finite and <= 0 (a positive gate grows the state without bound; -Infinity would make the
 * chunk form's relative gates exp(G_t - G_s) NaN). ValueError at the first element that is not,
 * with its [b, t, h, x] index.
 */
export function checkGateValues(gk: ArrayLike<number>, shape: readonly number[]): void {
  for (let i = 0; i < gk.length; i++) {
    const g = gk[i]!;
    if (g <= 0 && g > Number.NEGATIVE_INFINITY) continue;
    const index: number[] = [];
    let rest = i;
    for (let d = shape.length - 1; d >= 0; d--) {
      index.unshift(rest % shape[d]!);
      rest = Math.floor(rest / shape[d]!);
    }
    fail(
      ValueError,
      'gk',
      'finite log-space gates <= 0 (gk = log alpha, a decay alpha in (0, 1])',
      `${g} at [${index.join(', ')}]`,
    );
  }
}
