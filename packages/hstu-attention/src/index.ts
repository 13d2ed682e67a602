import type { AttentionProblem, ResolvedScoreMod } from '@attnkit/attention';
import {
  defineTiledFamily,
  type HstuMaskHook,
  type HstuRabHook,
  hstuRabTimes,
  hstuTimeThresholds,
  type TiledOptions,
} from '@attnkit/skeleton';
import {
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';

/**
 * HSTU pointwise attention (Zhai et al., "Actions Speak Louder than Words", ICML 2024; Meta's
 * generative-recommenders), over a jagged batch in the LHD layout:
 *
 *     A = silu(alpha Q K^T + rab) / maxSeqLen, masked to j <= i within each sequence; Y = A V
 *
 * (rab, the optional dense relative attention bias, is the skeleton's bias score mod; the
 * paper's bucketed form from position / time tables, `bucketedRab`, the skeleton's rab hook.)
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
   * within sequence b; on q's device. The backward then also returns `drab`. Exclusive with
   * `bucketedRab`.
   */
  rab?: Tensor;
  /**
   * The paper's bucketed relative attention bias, computed inside the kernels from two small
   * learned tables and per-token timestamps (no dense [B, H, N, N] tensor); exclusive with
   * `rab`. The backward then also returns `dPositionTable` / `dTimestampTable`. See
   * HstuBucketedRabOptions.
   */
  bucketedRab?: HstuBucketedRabOptions;
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

/**
 * HSTU's bucketed relative attention bias (generative-recommenders'
 * `RelativeBucketedTimeAndPositionBasedBias`), with exactly the meaning of @attnkit/attention's
 * `HstuBucketedRab` (the float64 reference): for query position i and key position j of a
 * sequence,
 *
 *     rab(i, j) = positionTable[h, clamp(j - i + (P - 1) / 2, 0, P - 1)]
 *               + timestampTable[h, bucket(|ts(i + 1) - ts(j)|)]
 *
 * with ts(i + 1) the timestamp of the token after i (the last token's own) and bucket(a) =
 * trunc(ln(max(a, 1)) / bucketDivisor) ('log') or trunc(sqrt(a) / bucketDivisor) ('sqrt'),
 * clamped to [0, T - 1]. It joins alpha q.k before anything else (before a user scoreMod).
 */
export interface HstuBucketedRabOptions {
  /**
   * f32 [H or 1, P], P odd (upstream: P = 2 maxSeqLen - 1), on q's device (a webgpu tensor for
   * webgpu inputs); one row is shared by all heads. Absent: no position term.
   */
  positionTable?: Tensor;
  /** f32 [H or 1, T] (upstream: T = num_buckets + 1), on q's device. Absent: no time term. */
  timestampTable?: Tensor;
  /**
   * Required with timestampTable: one timestamp per token (length L, the token axis of k; for
   * hstuCachedAttention the whole sequences'), host data: a cpu Tensor, Int32Array,
   * Float64Array or number[]. The kernels need INTEGERS (e.g. seconds, as upstream) whose span
   * within a sequence is below 2^31, so every difference is an exact int32 and the bucket is the
   * float64 reference's exactly; anything else is a ValueError naming
   * `bucketedRab.timestamps`.
   */
  timestamps?: Tensor | Int32Array | Float64Array | readonly number[];
  /** Default 'log' (the research HSTU model's bucketisation). */
  bucketFn?: 'log' | 'sqrt';
  /** Default 0.301 for 'log' (upstream's), 1 for 'sqrt'. A positive finite number. */
  bucketDivisor?: number;
}

const BUCKETED_KEYS = [
  'positionTable',
  'timestampTable',
  'timestamps',
  'bucketFn',
  'bucketDivisor',
];

/** A table of bucketedRab: an f32 Tensor [H or 1, columns] on q's device; typed errors naming it. */
function checkRabTable(t: unknown, name: string, H: number, q: Tensor, odd: boolean): Tensor {
  const what = `shape [${H} or 1, ${odd ? 'P' : 'T'}] ([H or 1, ${odd ? 'P' : 'T'}]${odd ? ', P odd' : ', T >= 1'})`;
  if (!t || typeof t !== 'object' || !Array.isArray((t as Tensor).shape))
    fail(ShapeError, name, `a Tensor of ${what}`, describe(t));
  const tt = t as Tensor;
  const s = tt.shape;
  if (s.length !== 2 || (s[0] !== H && s[0] !== 1) || s[1]! < 1 || (odd && s[1]! % 2 !== 1))
    fail(ShapeError, name, what, `shape ${formatShape(s)}`);
  if (tt.dtype !== 'f32')
    throw new DTypeError(`${name}: expected dtype f32, got ${tt.dtype}`, name);
  if (tt.device !== q.device)
    throw new DeviceError(
      `${name}: expected a tensor on ${q.device} (q's device), got one on ${tt.device}`,
      name,
    );
  return tt;
}

/**
 * `bucketedRab` as the skeleton's HstuRabHook (typed errors naming `bucketedRab.<field>`), or
 * undefined without it. `offsets` are the validated seqOffsets (the key axis: timestamps are
 * the whole sequences' for hstuCachedAttention too); the time bucket boundaries become exact
 * integer thresholds (hstuTimeThresholds) and the timestamps rebased int32 times (hstuRabTimes).
 */
function bucketedRabOf(
  o: HstuAttentionOptions,
  offsets: Int32Array,
  H: number,
  q: Tensor,
): HstuRabHook | undefined {
  const br = o.bucketedRab as unknown;
  if (br === undefined) return undefined;
  if (o.rab !== undefined)
    fail(
      ValueError,
      'bucketedRab',
      'either rab (dense) or bucketedRab (tables), not both',
      'both rab and bucketedRab',
    );
  if (br === null || typeof br !== 'object' || Array.isArray(br) || br instanceof Tensor)
    fail(
      ValueError,
      'bucketedRab',
      '{ positionTable?, timestampTable?, timestamps?, bucketFn?, bucketDivisor? }',
      describe(br),
    );
  const b = br as Record<string, unknown>;
  for (const key of Object.keys(b))
    if (!BUCKETED_KEYS.includes(key) && b[key] !== undefined)
      fail(
        ValueError,
        `bucketedRab.${key}`,
        `one of ${BUCKETED_KEYS.join(', ')} (unknown field)`,
        describe(b[key]),
      );
  if (b.positionTable === undefined && b.timestampTable === undefined)
    fail(ValueError, 'bucketedRab', 'a positionTable or a timestampTable (or both)', 'neither');
  const fn = (b.bucketFn as unknown) ?? 'log';
  if (fn !== 'log' && fn !== 'sqrt')
    fail(ValueError, 'bucketedRab.bucketFn', "'log' or 'sqrt'", describe(fn));
  const divisor = (b.bucketDivisor as unknown) ?? (fn === 'log' ? 0.301 : 1);
  if (typeof divisor !== 'number' || !Number.isFinite(divisor) || divisor <= 0)
    fail(ValueError, 'bucketedRab.bucketDivisor', 'a positive finite number', describe(divisor));
  const hook: HstuRabHook = { kind: 'hstuRab', grad: true };
  if (b.positionTable !== undefined)
    hook.positionTable = checkRabTable(b.positionTable, 'bucketedRab.positionTable', H, q, true);
  if (b.timestampTable !== undefined) {
    const table = checkRabTable(b.timestampTable, 'bucketedRab.timestampTable', H, q, false);
    const name = 'bucketedRab.timestamps';
    const L = offsets[offsets.length - 1]!;
    const ts = b.timestamps as unknown;
    let stamps: ArrayLike<number>;
    if (ts instanceof Tensor) {
      if (ts.device !== 'cpu')
        throw new DeviceError(
          `${name}: expected host data (a cpu Tensor or a number array; the kernels get them as int32 times), got a tensor on ${ts.device}`,
          name,
        );
      if (ts.shape.length !== 1 || ts.shape[0] !== L)
        fail(ShapeError, name, `shape [${L}] (one per token)`, `shape ${formatShape(ts.shape)}`);
      stamps = ts.toFloat64Array();
    } else if (ts instanceof Int32Array || ts instanceof Float64Array || Array.isArray(ts)) {
      stamps = ts as ArrayLike<number>;
    } else {
      fail(
        ValueError,
        name,
        `a Tensor, Int32Array, Float64Array or number[] of length L = ${L} (required with timestampTable)`,
        describe(ts),
      );
    }
    const { keyTime, nextTime } = hstuRabTimes(offsets, stamps, name);
    hook.timestampTable = table;
    hook.keyTime = keyTime;
    hook.nextTime = nextTime;
    hook.thresholds = hstuTimeThresholds(table.shape[1]!, fn, divisor);
  }
  return hook;
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
function checkOffsets(
  x: unknown,
  total: number,
  name = 'seqOffsets',
  what = `an Int32Array or number[] of B+1 offsets (first 0, non-decreasing, last L = ${total})`,
): Int32Array {
  if (!(x instanceof Int32Array) && !Array.isArray(x)) fail(ValueError, name, what, describe(x));
  const a = x as ArrayLike<unknown>;
  if (a.length < 2) fail(ValueError, name, what, `length ${a.length}`);
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0x7fffffff)
      fail(ValueError, name, what, `${describe(v)} at ${i}`);
    if (i === 0 && v !== 0) fail(ValueError, name, what, `first entry ${v}`);
    if (i > 0 && v < (a[i - 1] as number))
      fail(ValueError, name, what, `${v} after ${a[i - 1]} at ${i}`);
  }
  const last = a[a.length - 1] as number;
  if (last !== total) fail(ValueError, name, what, `last entry ${last}`);
  return Int32Array.from(a as ArrayLike<number>);
}

/** The family's options with M-FALCON's `deltaOffsets` (hstuCachedAttention). */
type CachedOptions = HstuAttentionOptions & { deltaOffsets?: Int32Array | readonly number[] };

/**
 * deltaOffsets validated against deltaQ's Ld rows and the sequences: B+1 offsets (as
 * seqOffsets), first 0, non-decreasing, last Ld, each sequence's count at most its length.
 */
function checkDeltaOffsets(o: CachedOptions, offsets: Int32Array, rows: number): Int32Array {
  const batch = offsets.length - 1;
  const what = `an Int32Array or number[] of B+1 = ${batch + 1} offsets into deltaQ's rows (first 0, non-decreasing, last Ld = ${rows})`;
  const x = o.deltaOffsets as unknown;
  if (!(x instanceof Int32Array) && !Array.isArray(x))
    fail(ValueError, 'deltaOffsets', what, describe(x));
  const a = x as ArrayLike<unknown>;
  if (a.length !== batch + 1)
    fail(ValueError, 'deltaOffsets', what, `length ${a.length} (seqOffsets has ${batch + 1})`);
  const d = checkOffsets(a as ArrayLike<number> as Int32Array, rows, 'deltaOffsets', what);
  for (let b = 0; b < batch; b++) {
    const len = offsets[b + 1]! - offsets[b]!;
    if (d[b + 1]! - d[b]! > len)
      fail(
        ValueError,
        'deltaOffsets',
        `at most the sequence's length of queries per sequence (sequence ${b} has length ${len})`,
        `${d[b + 1]! - d[b]!} queries`,
      );
  }
  return d;
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
  qOffsets: Int32Array = offsets,
): HstuMaskHook | undefined {
  const batch = offsets.length - 1;
  const numTargets = new Int32Array(batch);
  // Cached (M-FALCON): the candidates are the targets unless numTargets says otherwise, so each
  // one sees the history and itself only and scoring them together equals scoring each alone.
  if (qOffsets !== offsets && o.numTargets === undefined)
    for (let b = 0; b < batch; b++) numTargets[b] = qOffsets[b + 1]! - qOffsets[b]!;
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
  const cached = (o as CachedOptions).deltaOffsets !== undefined;
  const [Lq, H, D] = qs as [number, number, number];
  // Cached (M-FALCON): q holds only the candidates' rows, k and v the whole sequences.
  const L = cached ? ks[0]! : Lq;
  if (ks[0] !== L || ks[1] !== H || ks[2] !== D)
    fail(
      ShapeError,
      'k',
      cached ? `shape [L, ${H}, ${D}] (heads and D as deltaQ)` : `shape [${L}, ${H}, ${D}] (as q)`,
      `shape [${ks}]`,
    );
  if (vs[0] !== L || vs[1] !== H) fail(ShapeError, 'v', `shape [${L}, ${H}, Dv]`, `shape [${vs}]`);
  const offsets = checkOffsets(o.seqOffsets, L);
  const qOffsets = cached ? checkDeltaOffsets(o as CachedOptions, offsets, Lq) : offsets;
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
  const mask = maskOf(o, offsets, causal, qOffsets);
  // Validated here, before the problem (typed errors first); the family's `rab` rebuilds it.
  bucketedRabOf(o, offsets, H, q);
  const {
    seqOffsets: _s,
    maxSeqLen: _n,
    alpha: _a,
    rab: _r,
    bucketedRab: _br,
    numTargets: _t,
    contextualSeqLen: _c,
    maxAttnLen: _m,
    minFullAttnSeqLen: _f,
    deltaOffsets: _d,
    ...rest
  } = o as CachedOptions;
  return {
    ...rest,
    layout: 'THD',
    // Cached: each sequence's queries are its last delta_b tokens, which is the skeleton's
    // bottom-right alignment of Nq < Nk (causal band j <= r + nk - nq; the mask hook shifts
    // rows the same way).
    cuSeqlensQ: qOffsets,
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
  extraOptions: [
    'seqOffsets',
    'maxSeqLen',
    'alpha',
    'rab',
    'bucketedRab',
    'deltaOffsets',
    ...MASK_OPTIONS,
  ],
  omitOptions: DERIVED,
  forwardOutputs: ['o'], // no LSE
  toTiled,
  scoreMods: rabMod,
  biasGradOutput: 'drab',
  // toTiled has validated it: this rebuilds the hook (tables on q's device, int32 times).
  rab: (p, o, q) => bucketedRabOf(o, Int32Array.from(o.seqOffsets as ArrayLike<number>), p.hq, q),
  // toTiled has validated the options: this only rebuilds the hook from them.
  mask: (_p, o) => {
    const offsets = Int32Array.from(o.seqOffsets as ArrayLike<number>);
    const delta = (o as CachedOptions).deltaOffsets;
    return maskOf(
      o,
      offsets,
      (o.causal as boolean) ?? true,
      delta === undefined ? offsets : Int32Array.from(delta as ArrayLike<number>),
    );
  },
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
  noDelta(options, 'hstuAttention');
  const { o } = await family.forward(q, k, v, options);
  return { o };
}

/** deltaOffsets belongs to hstuCachedAttention: the plain entry points refuse it by name. */
function noDelta(options: unknown, fn: string): void {
  if (options && typeof options === 'object' && 'deltaOffsets' in options)
    fail(
      ValueError,
      'deltaOffsets',
      `no deltaOffsets option in ${fn} (cached candidate scoring is hstuCachedAttention)`,
      'deltaOffsets',
    );
}

export interface HstuCachedAttentionOptions extends Omit<HstuAttentionOptions, 'rab'> {
  /**
   * Int32 offsets (length B+1, as seqOffsets) into deltaQ's rows: sequence b's queries are its
   * last deltaOffsets[b+1] - deltaOffsets[b] tokens (the candidates; at most its length).
   */
  deltaOffsets: Int32Array | readonly number[];
  /**
   * Per sequence: its last tokens that are targets. Default: the candidate counts (each
   * candidate sees the history and itself, not the other candidates).
   */
  numTargets?: Int32Array | readonly number[];
}

/**
 * M-FALCON cached inference (generative-recommenders' `delta_hstu_mha`): score the candidates
 * of each sequence — its last delta_b tokens, the rows of deltaQ [Ld, H, D] — against k, v
 * [L, H, D|Dv] of the whole sequence (the cached history's k, v followed by the candidates'
 * own), in one call. Positions and masks are the full sequence's; numTargets defaults to the
 * candidate counts, so each candidate attends to the history and to itself only, and row r of
 * sequence b equals row len_b - delta_b + r of hstuAttention on the full sequence (with
 * numTargets = delta_b): many candidates cost one call, not one call each. Returns o [Ld, H, Dv].
 * Forward only (inference); no dense `rab` (as upstream's delta_hstu_mha), but `bucketedRab`
 * with the full sequences' positions and timestamps (length L of k).
 */
export async function hstuCachedAttention(
  deltaQ: Tensor,
  k: Tensor,
  v: Tensor,
  options: HstuCachedAttentionOptions,
): Promise<{ o: Tensor }> {
  if (!options || typeof options !== 'object')
    fail(ValueError, 'options', 'an object (HstuCachedAttentionOptions)', describe(options));
  if ((options as HstuAttentionOptions).rab !== undefined)
    fail(
      ValueError,
      'rab',
      'no rab in hstuCachedAttention (cached scoring takes no dense bias, as upstream delta_hstu_mha)',
      'a rab',
    );
  if (options.deltaOffsets === undefined)
    fail(ValueError, 'deltaOffsets', 'B+1 offsets into deltaQ (required)', 'undefined');
  const { o } = await family.forward(deltaQ, k, v, options as HstuAttentionOptions);
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
  /**
   * With `bucketedRab.positionTable`: d loss / d positionTable, f32 in its shape: dZ summed
   * per column (and head; over all heads for a shared one-row table) over the allowed pairs.
   */
  dPositionTable?: Tensor;
  /** With `bucketedRab.timestampTable`: d loss / d timestampTable, likewise (timestamps get none). */
  dTimestampTable?: Tensor;
}

/**
 * Gradients of HSTU attention for the upstream gradient dO [L, H, Dv]: with
 * z = alpha q_i.k_j + rab_ij and A = silu(z) / N, dV = A^T dO,
 * dZ = (dO V^T) sig(z) (1 + z (1 - sig(z))) / N, dQ = alpha dZ K, dK = alpha dZ^T Q and, with
 * `rab`, drab = dZ; with `bucketedRab`, dPositionTable / dTimestampTable = dZ summed per
 * table column. The forward's o is not needed.
 */
export async function hstuAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dO: Tensor,
  options: HstuAttentionOptions,
): Promise<HstuAttentionGrads> {
  noDelta(options, 'hstuAttentionBackward');
  const g = await family.backward(q, k, v, undefined, undefined, dO, options);
  const { dq, dk, dv } = g;
  const out: HstuAttentionGrads = { dq, dk, dv };
  if (g.dbias) out.drab = g.dbias;
  if (g.dPositionTable) out.dPositionTable = g.dPositionTable;
  if (g.dTimestampTable) out.dTimestampTable = g.dTimestampTable;
  return out;
}
