import type { AttentionProblem, ResolvedScoreMod } from '@attnkit/attention';
import { defineTiledFamily, type HstuMaskHook, type TiledOptions } from '@attnkit/skeleton';
import {
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  ShapeError,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';

/**
 * HSTU pointwise attention (Zhai et al., "Actions Speak Louder than Words", ICML 2024; Meta's
 * generative-recommenders), over a jagged batch in the LHD layout:
 *
 *     A = silu(alpha Q K^T + rab) / maxSeqLen, masked to j <= i within each sequence; Y = A V
 *
 * (rab, the optional dense relative attention bias, is the skeleton's bias score mod.)
 *
 * No softmax and no LSE: the fixed 1/maxSeqLen keeps Y's scale independent of the length. On the
 * tiled skeleton this family is one hook (pointwise silu, w = silu(s) / maxSeqLen with
 * s = alpha q.k) and its registrations: FlashAttention's loops on the ts, native and webgpu
 * backends, with the jagged batch as the skeleton's THD layout (cuSeqlensQ = cuSeqlensK =
 * seqOffsets).
 */
export interface HstuAttentionOptions
  extends Omit<TiledOptions, 'scale' | 'layout' | 'cuSeqlensQ' | 'cuSeqlensK' | 'causal'> {
  /** Int32 offsets (length B+1) of the sequences on the L axis: first 0, non-decreasing, last L. */
  seqOffsets: Int32Array | readonly number[];
  /** N of the normalisation 1/N; every sequence must be at most this long. */
  maxSeqLen: number;
  /** The scale of the scores: s = alpha q.k (a finite number). */
  alpha: number;
  /** Default true: query i sees keys j <= i of its sequence (diagonal included); false: all. */
  causal?: boolean;
  /**
   * Dense relative attention bias, added to alpha q.k before silu: f32 [B or 1, H or 1,
   * maxSeqLen, maxSeqLen] (B = seqOffsets.length - 1), element (b, h, i, j) for positions i, j
   * within sequence b; on q's device. The backward then also returns `drab`.
   */
  rab?: Tensor;
  /**
   * Per sequence (length B): how many of its last tokens are targets (candidates), each in
   * [0, its length]. A target attends to the history and to itself, not to other targets; the
   * history never sees a target. Default: none (0 everywhere).
   */
  numTargets?: Int32Array | readonly number[];
  /** Length of the contextual prefix (user features) every token sees; the prefix sees the whole history. Default 0. */
  contextualSeqLen?: number;
  /** Local window in (shifted) positions: j sees back at most this far; 0 (default) means none. */
  maxAttnLen?: number;
  /** With maxAttnLen > 0: the last rows of the history (and the targets) that ignore the window. Default 0. */
  minFullAttnSeqLen?: number;
}

/** The mask options (generative-recommenders' numTargets, contextualSeqLen, maxAttnLen, minFullAttnSeqLen). */
const MASK_OPTIONS = ['numTargets', 'contextualSeqLen', 'maxAttnLen', 'minFullAttnSeqLen'];

/** Options the skeleton derives from HSTU's (seqOffsets, alpha): passing them is a typo. */
const DERIVED = ['scale', 'layout', 'cuSeqlensQ', 'cuSeqlensK'];

function fail(
  error: typeof ValueError | typeof ShapeError,
  arg: string,
  expected: string,
  got: string,
): never {
  throw new error(`${arg}: expected ${expected}, got ${got}`, arg);
}

function checkLhd(t: Tensor, name: string, what: string): readonly number[] {
  if (!t || typeof t !== 'object' || !Array.isArray(t.shape))
    fail(ShapeError, name, `a Tensor ${what}`, describe(t));
  if (t.shape.length !== 3) fail(ShapeError, name, `shape ${what} (LHD)`, `shape [${t.shape}]`);
  return t.shape;
}

/** seqOffsets validated against L: an Int32Array [B+1] starting at 0, non-decreasing, ending at L. */
function checkOffsets(x: unknown, total: number): Int32Array {
  const what = `an Int32Array or number[] of B+1 offsets (first 0, non-decreasing, last L = ${total})`;
  if (!(x instanceof Int32Array) && !Array.isArray(x))
    fail(ValueError, 'seqOffsets', what, describe(x));
  const a = x as ArrayLike<unknown>;
  if (a.length < 2) fail(ValueError, 'seqOffsets', what, `length ${a.length}`);
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0x7fffffff)
      fail(ValueError, 'seqOffsets', what, `${describe(v)} at ${i}`);
    if (i === 0 && v !== 0) fail(ValueError, 'seqOffsets', what, `first entry ${v}`);
    if (i > 0 && v < (a[i - 1] as number))
      fail(ValueError, 'seqOffsets', what, `${v} after ${a[i - 1]} at ${i}`);
  }
  const last = a[a.length - 1] as number;
  if (last !== total) fail(ValueError, 'seqOffsets', what, `last entry ${last}`);
  return Int32Array.from(a as ArrayLike<number>);
}

function checkCount(x: unknown, name: string): number {
  if (x === undefined) return 0;
  if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x > 0x7fffffff)
    fail(ValueError, name, 'a non-negative integer', describe(x));
  return x;
}

/**
 * The mask options as the skeleton's HSTU mask hook (typed errors naming the option, in the
 * reference's terms), or undefined when none is active (no targets, no prefix, no window: the
 * plain causal / full band, at no cost). `offsets` are the validated seqOffsets.
 */
function maskOf(
  o: HstuAttentionOptions,
  offsets: Int32Array,
  causal: boolean,
): HstuMaskHook | undefined {
  const batch = offsets.length - 1;
  const numTargets = new Int32Array(batch);
  const nt = o.numTargets as unknown;
  if (nt !== undefined) {
    if (!(nt instanceof Int32Array) && !Array.isArray(nt))
      fail(
        ValueError,
        'numTargets',
        `an Int32Array or number[] of length B = ${batch}`,
        describe(nt),
      );
    const a = nt as ArrayLike<unknown>;
    if (a.length !== batch)
      fail(
        ValueError,
        'numTargets',
        `length B = ${batch} (one per sequence)`,
        `length ${a.length}`,
      );
    for (let b = 0; b < batch; b++) {
      const t = a[b];
      const len = offsets[b + 1]! - offsets[b]!;
      if (typeof t !== 'number' || !Number.isInteger(t) || t < 0 || t > len)
        fail(
          ValueError,
          'numTargets',
          `integers in [0, sequence length] (sequence ${b} has length ${len})`,
          `${describe(t)} at ${b}`,
        );
      numTargets[b] = t;
    }
  }
  const contextual = checkCount(o.contextualSeqLen, 'contextualSeqLen');
  const maxAttnLen = checkCount(o.maxAttnLen, 'maxAttnLen');
  const minFull = checkCount(o.minFullAttnSeqLen, 'minFullAttnSeqLen');
  if (contextual === 0 && maxAttnLen === 0 && numTargets.every((t) => t === 0)) return undefined;
  return { kind: 'hstu', numTargets, contextual, maxAttnLen, minFull, causal };
}

/**
 * HSTU's options as the skeleton's: q, k [L, H, D] and v [L, H, Dv] (one head count: HSTU has
 * no GQA) are THD tensors with cuSeqlensQ = cuSeqlensK = seqOffsets, alpha the scale, causal
 * (default true) the skeleton's bottom-right causal, which for Nq = Nk is j <= i.
 */
function toTiled(o: HstuAttentionOptions, q: Tensor, k: Tensor, v: Tensor): TiledOptions {
  const qs = checkLhd(q, 'q', '[L, H, D]');
  if (q.dtype === 'f64') {
    throw new DTypeError(
      'q: expected f32, f16 or bf16 (the kernels compute in f32), got f64; for float64 results use hstuAttentionReference from @attnkit/attention',
      'q',
    );
  }
  const ks = checkLhd(k, 'k', '[L, H, D]');
  const vs = checkLhd(v, 'v', '[L, H, Dv]');
  const [L, H, D] = qs as [number, number, number];
  if (ks[0] !== L || ks[1] !== H || ks[2] !== D)
    fail(ShapeError, 'k', `shape [${L}, ${H}, ${D}] (as q)`, `shape [${ks}]`);
  if (vs[0] !== L || vs[1] !== H) fail(ShapeError, 'v', `shape [${L}, ${H}, Dv]`, `shape [${vs}]`);
  const offsets = checkOffsets(o.seqOffsets, L);
  let longest = 0;
  for (let b = 1; b < offsets.length; b++)
    longest = Math.max(longest, offsets[b]! - offsets[b - 1]!);
  const n = o.maxSeqLen as unknown;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1)
    fail(ValueError, 'maxSeqLen', 'a positive integer', describe(n));
  if (n < longest)
    fail(
      ValueError,
      'maxSeqLen',
      `at least the longest sequence (${longest}, from seqOffsets)`,
      String(n),
    );
  const alpha = o.alpha as unknown;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha))
    fail(ValueError, 'alpha', 'a finite number', describe(alpha));
  const causal = (o.causal as unknown) ?? true;
  if (typeof causal !== 'boolean') fail(ValueError, 'causal', 'a boolean', describe(causal));
  const mask = maskOf(o, offsets, causal);
  const {
    seqOffsets: _s,
    maxSeqLen: _n,
    alpha: _a,
    rab: _r,
    numTargets: _t,
    contextualSeqLen: _c,
    maxAttnLen: _m,
    minFullAttnSeqLen: _f,
    ...rest
  } = o;
  return {
    ...rest,
    layout: 'THD',
    cuSeqlensQ: offsets,
    cuSeqlensK: offsets,
    scale: alpha,
    // The band must contain the mask (HstuMaskHook (b)): a contextual prefix's rows see later
    // tokens, so with one there is no band and the mask's rule does all the masking.
    causal: causal && (mask === undefined || mask.contextual === 0),
  };
}

/**
 * `rab` as the skeleton's bias score mod: its own strides (row maxSeqLen, batch / head 0 where
 * broadcast), so the kernels index it by (b, h, i, j) with i, j positions within the sequence,
 * exactly as a flash-attention bias over THD; first of the mods (it joins alpha q.k before
 * anything else) and with grad, so the backward returns its gradient.
 */
function rabMod(p: AttentionProblem, o: HstuAttentionOptions, q: Tensor): ResolvedScoreMod[] {
  const rab = o.rab as unknown;
  if (rab === undefined) return [];
  const n = o.maxSeqLen;
  const H = p.hq;
  const what = `shape [${p.batch} or 1, ${H} or 1, ${n}, ${n}] ([B or 1, H or 1, maxSeqLen, maxSeqLen])`;
  if (!rab || typeof rab !== 'object' || !Array.isArray((rab as Tensor).shape))
    fail(ShapeError, 'rab', `a Tensor of ${what}`, describe(rab));
  const t = rab as Tensor;
  const s = t.shape;
  if (
    s.length !== 4 ||
    (s[0] !== p.batch && s[0] !== 1) ||
    (s[1] !== H && s[1] !== 1) ||
    s[2] !== n ||
    s[3] !== n
  )
    fail(ShapeError, 'rab', what, `shape ${formatShape(s)}`);
  if (t.dtype !== 'f32') throw new DTypeError(`rab: expected dtype f32, got ${t.dtype}`, 'rab');
  if (t.device !== q.device)
    throw new DeviceError(
      `rab: expected a tensor on ${q.device} (q's device), got one on ${t.device}`,
      'rab',
    );
  const headStride = s[1] === 1 ? 0 : n * n;
  const batchStride = s[0] === 1 ? 0 : s[1]! * n * n;
  return [{ kind: 'bias', bias: t, batchStride, headStride, rowStride: n, grad: true }];
}

const family = defineTiledFamily<HstuAttentionOptions>({
  family: 'hstu',
  // w = silu(s) / maxSeqLen (toTiled has checked maxSeqLen).
  normalize: (_p: AttentionProblem, o) => ({ kind: 'silu', factor: 1 / o.maxSeqLen }),
  extraOptions: ['seqOffsets', 'maxSeqLen', 'alpha', 'rab', ...MASK_OPTIONS],
  omitOptions: DERIVED,
  forwardOutputs: ['o'], // no LSE
  toTiled,
  scoreMods: rabMod,
  biasGradOutput: 'drab',
  // toTiled has validated the options: this only rebuilds the hook from them.
  mask: (_p, o) =>
    maskOf(o, Int32Array.from(o.seqOffsets as ArrayLike<number>), (o.causal as boolean) ?? true),
});

/**
 * HSTU attention forward. q, k [L, H, D], v [L, H, Dv] (f32, f16 or bf16, all one dtype) with
 * `seqOffsets` (B+1), `maxSeqLen` and `alpha`; causal by default. Returns o [L, H, Dv] in q's
 * dtype. The backend follows the inputs' device unless `backend` names one.
 */
export async function hstuAttention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: HstuAttentionOptions,
): Promise<{ o: Tensor }> {
  const { o } = await family.forward(q, k, v, options);
  return { o };
}

export interface HstuAttentionGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  /**
   * With `rab`: d loss / d rab = dZ, f32 in rab's shape (summed over the batch / head dims rab
   * broadcasts over); 0 at pairs no sequence attends (j > i when causal, i or j past the
   * sequence's length).
   */
  drab?: Tensor;
}

/**
 * Gradients of HSTU attention for the upstream gradient dO [L, H, Dv]: with
 * z = alpha q_i.k_j + rab_ij and A = silu(z) / N, dV = A^T dO,
 * dZ = (dO V^T) sig(z) (1 + z (1 - sig(z))) / N, dQ = alpha dZ K, dK = alpha dZ^T Q and, with
 * `rab`, drab = dZ. The forward's o is not needed.
 */
export async function hstuAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dO: Tensor,
  options: HstuAttentionOptions,
): Promise<HstuAttentionGrads> {
  const g = await family.backward(q, k, v, undefined, undefined, dO, options);
  const { dq, dk, dv } = g;
  return g.dbias ? { dq, dk, dv, drab: g.dbias } : { dq, dk, dv };
}
