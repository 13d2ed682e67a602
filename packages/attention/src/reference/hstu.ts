import {
  DTypeError,
  formatShape,
  isFloatDType,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { checkOptions, checkRank, checkScalar, f64, fail, readF64, sigmoid } from './util.js';

/**
 * Float64 HSTU pointwise attention (KERNELS.md "HSTU pointwise attention", as in
 * generative-recommenders): per sequence of the jagged batch,
 * A = silu(alpha Q K^T + rab) / maxSeqLen masked by `hstuAllowed`, Y = A V.
 * There is no softmax: the fixed 1/maxSeqLen keeps the scale of Y independent of the length.
 * With no mask option set the mask is j <= i (diagonal included), or every j when causal is false.
 */
export interface HstuOptions {
  /** int32 offsets of length B+1 into the L (token) axis; first 0, last L. */
  seqOffsets: Int32Array | readonly number[];
  /** N of the normalisation; every sequence must be at most this long. */
  maxSeqLen: number;
  alpha: number;
  /** Default true: j <= i. false: both directions (see `hstuAllowed`). */
  causal?: boolean;
  /**
   * Additive bias [B or 1, H or 1, maxSeqLen, maxSeqLen] indexed by positions within the
   * sequence. Exclusive with `bucketedRab`.
   */
  rab?: Tensor;
  /** The paper's bias from learned position / time tables (see `HstuBucketedRab`). */
  bucketedRab?: HstuBucketedRab;
  /** Per sequence (length B): how many of its last tokens are targets (candidates). Default 0. */
  numTargets?: Int32Array | readonly number[];
  /** Length of the contextual prefix (user features) of every sequence. Default 0. */
  contextualSeqLen?: number;
  /** Local window in (shifted) positions; 0 (default) means no window. */
  maxAttnLen?: number;
  /** With maxAttnLen > 0: the last rows of the history that ignore the window. Default 0. */
  minFullAttnSeqLen?: number;
}

/** The mask options of one sequence, as `hstuAllowed` reads them. */
export interface HstuMaskRule {
  causal?: boolean;
  numTargets?: number;
  contextualSeqLen?: number;
  maxAttnLen?: number;
  minFullAttnSeqLen?: number;
}

/**
 * Whether query position i may attend key position j (0-based, within one sequence of length
 * seqLen). This is generative-recommenders' mask (`_get_valid_attn_mask` of
 * ops/pytorch/pt_hstu_attention.py, which `pytorch_hstu_mha` and `pytorch_cached_hstu_mha`
 * apply, and the Triton kernel's `_hstu_attn_fwd_one_block` repeats), re-expressed per pair:
 *
 *   c = contextualSeqLen, t = numTargets, m = maxAttnLen, f = minFullAttnSeqLen
 *   id(x)  = c > 0 ? max(x - c + 1, 0) : x        the whole prefix shares id 0
 *   top    = (c > 0 ? seqLen - c + 1 : seqLen) - t  the first target's id
 *   r = min(id(i), top), s = min(id(j), top)        every target shares id `top`
 *   d = r - s, or |r - s| when causal is false
 *   allowed = (i == j || d > 0)
 *          && (m == 0 || d <= m || (f > 0 && r >= top - f))
 *          || (c > 0 && r == 0 && s < top)
 *
 * Consequences: a target sees the history and itself, not the other targets; the history never
 * sees a target (causal); the prefix rows (r == 0) see the whole history, later tokens
 * included; every later row sees the prefix (as key id 0) only while the window allows it, i.e.
 * the window `d <= m` is also measured to the prefix; `f` exempts the rows with r >= top - f
 * (the last f history ids and, when f > 0, all targets) from the window. t = 0 is the same as
 * upstream's num_targets = None. Nothing else is validated here: callers check the ranges.
 */
export function hstuAllowed(i: number, j: number, seqLen: number, rule: HstuMaskRule): boolean {
  const c = rule.contextualSeqLen ?? 0;
  const m = rule.maxAttnLen ?? 0;
  const f = rule.minFullAttnSeqLen ?? 0;
  const top = (c > 0 ? seqLen - c + 1 : seqLen) - (rule.numTargets ?? 0);
  const r = Math.min(c > 0 ? Math.max(i - c + 1, 0) : i, top);
  const s = Math.min(c > 0 ? Math.max(j - c + 1, 0) : j, top);
  let d = r - s;
  if (rule.causal === false) d = Math.abs(d);
  let ok = i === j || d > 0;
  if (m > 0) ok = ok && (d <= m || (f > 0 && r >= top - f));
  if (c > 0) ok = ok || (r === 0 && s < top);
  return ok;
}

/**
 * The relative attention bias of the HSTU paper, generative-recommenders'
 * `RelativeBucketedTimeAndPositionBasedBias` (research/modeling/sequential/hstu.py), per head:
 * rab(i, j) = positionTable[h, hstuPositionBucket(i, j, P)]
 *           + timestampTable[h, hstuTimeBucket(ts'(i) - ts(j), T, bucketFn, bucketDivisor)],
 * i, j positions within the sequence, ts(j) the timestamp of key j and ts'(i) the timestamp of
 * the token after query i (upstream's `ext_timestamps[:, 1:] - ext_timestamps[:, :-1]`); for
 * the last token of a sequence ts'(i) = ts(i) (upstream appends the last timestamp; it does so
 * at maxSeqLen, so a padded upstream sequence shorter than maxSeqLen reads its padding value
 * there instead: that padding artefact is not reproduced).
 * At least one of the two tables is given.
 */
export interface HstuBucketedRab {
  /** [H or 1, P] with P odd; upstream's `_pos_w` is P = 2 maxSeqLen - 1. */
  positionTable?: Tensor;
  /** [H or 1, T]; upstream's `_ts_w` is T = num_buckets + 1. */
  timestampTable?: Tensor;
  /** Per token, length L (required with timestampTable); differences are taken in float64. */
  timestamps?: Tensor | Int32Array | Float64Array | readonly number[];
  /** Default 'log' (the research HSTU model's bucketisation). */
  bucketFn?: 'log' | 'sqrt';
  /** Default 0.301 for 'log' (upstream's lambda), 1 for 'sqrt'. */
  bucketDivisor?: number;
}

/**
 * Column of the position table for query i, key j: (j - i) + R clamped to [0, P - 1] with
 * R = (P - 1) / 2. Upstream's pad/repeat/reshape of `_pos_w` (P = 2N - 1) reads exactly
 * `_pos_w[N - 1 + j - i]`; the clamp only matters for tables smaller than that.
 */
export function hstuPositionBucket(i: number, j: number, numPositionBuckets: number): number {
  const r = (numPositionBuckets - 1) / 2;
  return Math.min(Math.max(j - i + r, 0), numPositionBuckets - 1);
}

/**
 * Column of the time table for a timestamp difference dt: trunc(ln(max(|dt|, 1)) / divisor)
 * ('log', upstream's `(torch.log(torch.abs(x).clamp(min=1)) / 0.301).long()`) or
 * trunc(sqrt(|dt|) / divisor) ('sqrt'), clamped to [0, T - 1] (upstream clamps to
 * [0, num_buckets] with T = num_buckets + 1). Computed in float64: a kernel computing it in
 * float32 can land one bucket off where |dt| sits within rounding of a boundary.
 */
export function hstuTimeBucket(
  dt: number,
  numTimeBuckets: number,
  bucketFn: 'log' | 'sqrt' = 'log',
  bucketDivisor: number = bucketFn === 'log' ? 0.301 : 1,
): number {
  const a = Math.abs(dt);
  const x =
    bucketFn === 'log' ? Math.log(Math.max(a, 1)) / bucketDivisor : Math.sqrt(a) / bucketDivisor;
  return Math.min(Math.max(Math.trunc(x), 0), numTimeBuckets - 1);
}

interface Table {
  data: Float64Array;
  /** Row stride by head: 0 when the table is shared by all heads. */
  hs: number;
  cols: number;
  heads: number;
}

interface Bucketed {
  pos?: Table;
  ts?: Table;
  stamps?: Float64Array;
  fn: 'log' | 'sqrt';
  divisor: number;
}

interface HstuProblem {
  batch: number;
  h: number;
  d: number;
  dv: number;
  offsets: Int32Array;
  n: number;
  alpha: number;
  causal: boolean;
  /** rab strides for batch and head (0 when broadcast). */
  rabB: number;
  rabH: number;
  targets: Int32Array;
  contextual: number;
  maxAttnLen: number;
  minFull: number;
  bucketed?: Bucketed;
}

function checkCount(value: unknown, name: string): number {
  if (value === undefined) return 0;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0)
    fail(ValueError, name, 'a non-negative integer', value);
  return value;
}

function checkTable(t: unknown, name: string, h: number | undefined): Table {
  const s = checkRank(t, name, 2, '[H or 1, buckets]');
  if ((h !== undefined && s[0] !== h && s[0] !== 1) || s[1]! < 1)
    fail(ShapeError, name, `shape [${h ?? 'H'} or 1, >= 1]`, `shape ${formatShape(s)}`);
  return { data: readF64(t, name), hs: s[0] === 1 ? 0 : s[1]!, cols: s[1]!, heads: s[0]! };
}

/** Validates `bucketedRab` for L tokens and H heads (undefined: the tables' own head count). */
function resolveBucketed(br: HstuBucketedRab, L: number, h: number | undefined): Bucketed {
  checkOptions(br);
  if (br.positionTable === undefined && br.timestampTable === undefined)
    fail(ValueError, 'bucketedRab', 'positionTable or timestampTable', br);
  const fn = br.bucketFn ?? 'log';
  if (fn !== 'log' && fn !== 'sqrt')
    fail(ValueError, 'bucketedRab.bucketFn', "'log' or 'sqrt'", fn);
  const divisor = checkScalar(
    br.bucketDivisor ?? (fn === 'log' ? 0.301 : 1),
    'bucketedRab.bucketDivisor',
  );
  if (divisor <= 0) fail(ValueError, 'bucketedRab.bucketDivisor', 'a positive number', divisor);
  const out: Bucketed = { fn, divisor };
  if (br.positionTable !== undefined) {
    out.pos = checkTable(br.positionTable, 'bucketedRab.positionTable', h);
    if (out.pos.cols % 2 !== 1)
      fail(
        ShapeError,
        'bucketedRab.positionTable',
        'an odd number of columns (2 maxSeqLen - 1 as upstream)',
        `shape ${formatShape(br.positionTable.shape)}`,
      );
  }
  if (br.timestampTable !== undefined) {
    out.ts = checkTable(br.timestampTable, 'bucketedRab.timestampTable', h);
    const ts = br.timestamps;
    let stamps: Float64Array;
    if (ts instanceof Tensor) {
      if (ts.ndim !== 1 || ts.shape[0] !== L)
        fail(
          ShapeError,
          'bucketedRab.timestamps',
          `shape [${L}]`,
          `shape ${formatShape(ts.shape)}`,
        );
      stamps = ts.toFloat64Array();
    } else if (ts instanceof Int32Array || ts instanceof Float64Array || Array.isArray(ts)) {
      if (ts.length !== L)
        fail(
          ShapeError,
          'bucketedRab.timestamps',
          `length ${L} (one per token)`,
          `length ${ts.length}`,
        );
      stamps = Float64Array.from(ts as ArrayLike<number>);
    } else {
      fail(ValueError, 'bucketedRab.timestamps', 'a Tensor or number array of length L', ts);
    }
    const bad = stamps.findIndex((x) => !Number.isFinite(x));
    if (bad >= 0)
      fail(ValueError, 'bucketedRab.timestamps', 'finite numbers', `${stamps[bad]} at ${bad}`);
    out.stamps = stamps;
  }
  if (
    out.pos &&
    out.ts &&
    out.pos.heads !== out.ts.heads &&
    out.pos.heads !== 1 &&
    out.ts.heads !== 1
  )
    fail(
      ShapeError,
      'bucketedRab.timestampTable',
      `${out.pos.heads} or 1 heads (as positionTable)`,
      `${out.ts.heads}`,
    );
  return out;
}

function resolveOffsets(so: unknown, name: string, n: number, total: number): Int32Array {
  if (!(so instanceof Int32Array) && !Array.isArray(so))
    fail(ValueError, name, 'an Int32Array or number[]', so);
  if (so.length < 2) fail(ValueError, name, 'at least 2 entries (B+1 with B >= 1)', so);
  if (!Array.from(so as ArrayLike<number>).every((x) => Number.isInteger(x)))
    fail(ValueError, name, 'integer entries', so);
  const offsets = Int32Array.from(so as ArrayLike<number>);
  if (offsets[0] !== 0) fail(ValueError, name, 'first entry 0', so);
  for (let b = 1; b < offsets.length; b++) {
    const len = offsets[b]! - offsets[b - 1]!;
    if (len < 0)
      fail(
        ValueError,
        name,
        `non-decreasing offsets (entry ${b} is ${offsets[b]} < ${offsets[b - 1]})`,
        so,
      );
    if (len > n)
      fail(
        ValueError,
        name,
        `sequence lengths <= maxSeqLen ${n} (sequence ${b - 1} has ${len})`,
        so,
      );
  }
  if (offsets[offsets.length - 1] !== total) {
    fail(
      ValueError,
      name,
      `last entry equal to the token count L = ${total}`,
      offsets[offsets.length - 1],
    );
  }
  return offsets;
}

function checkFloat(t: Tensor, name: string): void {
  if (!isFloatDType(t.dtype))
    fail(DTypeError, name, 'a float dtype (f32, f64, f16, bf16)', t.dtype);
}

function resolve(q: Tensor, k: Tensor, v: Tensor, options: HstuOptions): HstuProblem {
  checkOptions(options);
  const [L, H, D] = checkRank(q, 'q', 3, '[L, H, D]');
  const ks = checkRank(k, 'k', 3, '[L, H, D]');
  const vs = checkRank(v, 'v', 3, '[L, H, Dv]');
  checkFloat(q, 'q');
  checkFloat(k, 'k');
  checkFloat(v, 'v');
  if (ks[0] !== L || ks[1] !== H || ks[2] !== D) {
    fail(ShapeError, 'k', `shape [${L}, ${H}, ${D}] (as q)`, `shape ${formatShape(ks)}`);
  }
  if (vs[0] !== L || vs[1] !== H)
    fail(ShapeError, 'v', `shape [${L}, ${H}, Dv]`, `shape ${formatShape(vs)}`);
  const n = options.maxSeqLen;
  if (!Number.isInteger(n) || n < 1) fail(ValueError, 'maxSeqLen', 'a positive integer', n);
  const alpha = checkScalar(options.alpha, 'alpha');
  const causal = options.causal ?? true;
  if (typeof causal !== 'boolean') fail(ValueError, 'causal', 'a boolean', causal);
  const offsets = resolveOffsets(options.seqOffsets, 'seqOffsets', n, L!);
  const batch = offsets.length - 1;
  let rabB = 0;
  let rabH = 0;
  if (options.rab !== undefined) {
    if (options.bucketedRab !== undefined)
      fail(ValueError, 'bucketedRab', 'no dense rab at the same time', 'both rab and bucketedRab');
    const rs = checkRank(options.rab, 'rab', 4, '[B or 1, H or 1, maxSeqLen, maxSeqLen]');
    if (
      (rs[0] !== batch && rs[0] !== 1) ||
      (rs[1] !== H && rs[1] !== 1) ||
      rs[2] !== n ||
      rs[3] !== n
    ) {
      fail(
        ShapeError,
        'rab',
        `shape [${batch} or 1, ${H} or 1, ${n}, ${n}]`,
        `shape ${formatShape(rs)}`,
      );
    }
    rabH = rs[1] === 1 ? 0 : n * n;
    rabB = rs[0] === 1 ? 0 : rs[1]! * n * n;
  }
  const targets = new Int32Array(batch);
  const nt = options.numTargets;
  if (nt !== undefined) {
    if (!(nt instanceof Int32Array) && !Array.isArray(nt))
      fail(ValueError, 'numTargets', 'an Int32Array or number[] of length B', nt);
    if (nt.length !== batch)
      fail(ValueError, 'numTargets', `length B = ${batch}`, `length ${nt.length}`);
    for (let b = 0; b < batch; b++) {
      const t = nt[b]!;
      const len = offsets[b + 1]! - offsets[b]!;
      if (!Number.isInteger(t) || t < 0 || t > len)
        fail(
          ValueError,
          'numTargets',
          `integers in [0, sequence length] (sequence ${b} has length ${len})`,
          `${t} at ${b}`,
        );
      targets[b] = t;
    }
  }
  return {
    batch,
    h: H!,
    d: D!,
    dv: vs[2]!,
    offsets,
    n,
    alpha,
    causal,
    rabB,
    rabH,
    targets,
    contextual: checkCount(options.contextualSeqLen, 'contextualSeqLen'),
    maxAttnLen: checkCount(options.maxAttnLen, 'maxAttnLen'),
    minFull: checkCount(options.minFullAttnSeqLen, 'minFullAttnSeqLen'),
    bucketed:
      options.bucketedRab === undefined ? undefined : resolveBucketed(options.bucketedRab, L!, H),
  };
}

function ruleOf(p: HstuProblem, b: number): HstuMaskRule {
  return {
    causal: p.causal,
    numTargets: p.targets[b]!,
    contextualSeqLen: p.contextual,
    maxAttnLen: p.maxAttnLen,
    minFullAttnSeqLen: p.minFull,
  };
}

/**
 * Calls f(i, j, li, lj) for the allowed pairs of sequence b whose query position li is at least
 * firstRow (token indices i, j global; li, lj within the sequence).
 */
function pairs(
  p: HstuProblem,
  b: number,
  firstRow: number,
  f: (i: number, j: number, li: number, lj: number) => void,
): void {
  const start = p.offsets[b]!;
  const len = p.offsets[b + 1]! - start;
  const rule = ruleOf(p, b);
  for (let li = firstRow; li < len; li++) {
    for (let lj = 0; lj < len; lj++) {
      if (hstuAllowed(li, lj, len, rule)) f(start + li, start + lj, li, lj);
    }
  }
}

/** Table columns (position, time) used by pair (li, lj) of sequence b. */
function buckets(
  offsets: Int32Array,
  bk: Bucketed,
  b: number,
  li: number,
  lj: number,
): [number, number] {
  const pc = bk.pos ? hstuPositionBucket(li, lj, bk.pos.cols) : 0;
  let tc = 0;
  if (bk.ts && bk.stamps) {
    const start = offsets[b]!;
    const len = offsets[b + 1]! - start;
    const next = bk.stamps[start + Math.min(li + 1, len - 1)]!;
    tc = hstuTimeBucket(next - bk.stamps[start + lj]!, bk.ts.cols, bk.fn, bk.divisor);
  }
  return [pc, tc];
}

/** z = alpha q . k_j + rab at head h, q being row qi of Q. */
function logit(
  p: HstuProblem,
  Q: Float64Array,
  qi: number,
  K: Float64Array,
  R: Float64Array | undefined,
  b: number,
  h: number,
  j: number,
  li: number,
  lj: number,
): number {
  const qo = (qi * p.h + h) * p.d;
  const ko = (j * p.h + h) * p.d;
  let s = 0;
  for (let c = 0; c < p.d; c++) s += Q[qo + c]! * K[ko + c]!;
  let bias = R ? R[b * p.rabB + h * p.rabH + li * p.n + lj]! : 0;
  const bk = p.bucketed;
  if (bk) {
    const [pc, tc] = buckets(p.offsets, bk, b, li, lj);
    if (bk.pos) bias += bk.pos.data[h * bk.pos.hs + pc]!;
    if (bk.ts) bias += bk.ts.data[h * bk.ts.hs + tc]!;
  }
  return p.alpha * s + bias;
}

export function hstuAttentionReference(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: HstuOptions,
): { o: Tensor } {
  const p = resolve(q, k, v, options);
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const R = options.rab ? readF64(options.rab, 'rab') : undefined;
  const O = new Float64Array(q.shape[0]! * p.h * p.dv);
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.h; h++) {
      pairs(p, b, 0, (i, j, li, lj) => {
        const z = logit(p, Q, i, K, R, b, h, j, li, lj);
        const a = (z * sigmoid(z)) / p.n;
        const oo = (i * p.h + h) * p.dv;
        const vo = (j * p.h + h) * p.dv;
        for (let c = 0; c < p.dv; c++) O[oo + c] = O[oo + c]! + a * V[vo + c]!;
      });
    }
  }
  return { o: f64(O, [q.shape[0]!, p.h, p.dv]) };
}

export interface HstuGrads {
  dq: Tensor;
  dk: Tensor;
  dv: Tensor;
  /** With a dense `rab`: dZ summed over the dimensions rab broadcasts. */
  drab?: Tensor;
  /** With `bucketedRab.positionTable`: dZ of the allowed pairs summed per column (and head). */
  dPositionTable?: Tensor;
  /** With `bucketedRab.timestampTable`: dZ of the allowed pairs summed per column (and head). */
  dTimestampTable?: Tensor;
}

/**
 * dV_j = sum_i A_ij dO_i; dZ_ij = (dO_i . v_j) silu'(z_ij) / N with
 * silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z))); dQ_i = alpha sum_j dZ_ij k_j,
 * dK_j = alpha sum_i dZ_ij q_i, d rab = dZ summed over the dimensions rab broadcasts, d table
 * columns = dZ summed over the allowed pairs that read them (masked pairs contribute nothing).
 * The timestamps get no gradient (upstream detaches the buckets).
 */
export function hstuAttentionReferenceBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dO: Tensor,
  options: HstuOptions,
): HstuGrads {
  const p = resolve(q, k, v, options);
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const G = readF64(dO, 'dO', [q.shape[0]!, p.h, p.dv]);
  const R = options.rab ? readF64(options.rab, 'rab') : undefined;
  const bk = p.bucketed;
  const dQ = new Float64Array(Q.length);
  const dK = new Float64Array(K.length);
  const dV = new Float64Array(V.length);
  const dR = R ? new Float64Array(R.length) : undefined;
  const dP = bk?.pos ? new Float64Array(bk.pos.data.length) : undefined;
  const dT = bk?.ts ? new Float64Array(bk.ts.data.length) : undefined;
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.h; h++) {
      pairs(p, b, 0, (i, j, li, lj) => {
        const z = logit(p, Q, i, K, R, b, h, j, li, lj);
        const s = sigmoid(z);
        const qo = (i * p.h + h) * p.d;
        const ko = (j * p.h + h) * p.d;
        const go = (i * p.h + h) * p.dv;
        const vo = (j * p.h + h) * p.dv;
        const a = (z * s) / p.n;
        let dA = 0;
        for (let c = 0; c < p.dv; c++) {
          dA += G[go + c]! * V[vo + c]!;
          dV[vo + c] = dV[vo + c]! + a * G[go + c]!;
        }
        // (1 - s) as sigmoid(-z): no cancellation when s -> 1.
        const dZ = (dA * s * (1 + z * sigmoid(-z))) / p.n;
        for (let c = 0; c < p.d; c++) {
          dQ[qo + c] = dQ[qo + c]! + p.alpha * dZ * K[ko + c]!;
          dK[ko + c] = dK[ko + c]! + p.alpha * dZ * Q[qo + c]!;
        }
        if (dR) {
          const ro = b * p.rabB + h * p.rabH + li * p.n + lj;
          dR[ro] = dR[ro]! + dZ;
        }
        if (bk && (dP || dT)) {
          const [pc, tc] = buckets(p.offsets, bk, b, li, lj);
          if (dP && bk.pos) dP[h * bk.pos.hs + pc] = dP[h * bk.pos.hs + pc]! + dZ;
          if (dT && bk.ts) dT[h * bk.ts.hs + tc] = dT[h * bk.ts.hs + tc]! + dZ;
        }
      });
    }
  }
  const out: HstuGrads = {
    dq: f64(dQ, q.shape),
    dk: f64(dK, k.shape),
    dv: f64(dV, v.shape),
  };
  if (dR && options.rab) out.drab = f64(dR, options.rab.shape);
  if (dP && bk?.pos) out.dPositionTable = f64(dP, [bk.pos.heads, bk.pos.cols]);
  if (dT && bk?.ts) out.dTimestampTable = f64(dT, [bk.ts.heads, bk.ts.cols]);
  return out;
}

/**
 * The dense rab [B, H', maxSeqLen, maxSeqLen] (H' the tables' head count, 1 when both are
 * shared) that `bucketedRab` adds: entry (b, h, i, j) = the bias of query i, key j of sequence b
 * for i, j below its length, 0 beyond. The attention with `rab` = this tensor equals the one
 * with `bucketedRab`, and its drab summed per column equals dPositionTable / dTimestampTable.
 */
export function hstuBucketedRabDense(
  seqOffsets: Int32Array | readonly number[],
  maxSeqLen: number,
  bucketedRab: HstuBucketedRab,
): Tensor {
  if (!Number.isInteger(maxSeqLen) || maxSeqLen < 1)
    fail(ValueError, 'maxSeqLen', 'a positive integer', maxSeqLen);
  const so = seqOffsets as ArrayLike<number>;
  const L = so && typeof so.length === 'number' && so.length > 0 ? so[so.length - 1]! : 0;
  const offsets = resolveOffsets(seqOffsets, 'seqOffsets', maxSeqLen, L);
  const bk = resolveBucketed(bucketedRab, L, undefined);
  const heads = Math.max(bk.pos?.heads ?? 1, bk.ts?.heads ?? 1);
  const batch = offsets.length - 1;
  const n = maxSeqLen;
  const out = new Float64Array(batch * heads * n * n);
  for (let b = 0; b < batch; b++) {
    const len = offsets[b + 1]! - offsets[b]!;
    for (let h = 0; h < heads; h++) {
      for (let li = 0; li < len; li++) {
        for (let lj = 0; lj < len; lj++) {
          const [pc, tc] = buckets(offsets, bk, b, li, lj);
          let x = 0;
          if (bk.pos) x += bk.pos.data[h * bk.pos.hs + pc]!;
          if (bk.ts) x += bk.ts.data[h * bk.ts.hs + tc]!;
          out[((b * heads + h) * n + li) * n + lj] = x;
        }
      }
    }
  }
  return f64(out, [batch, heads, n, n]);
}

export interface HstuCachedOptions extends HstuOptions {
  /**
   * int32 offsets of length B+1 into deltaQ's rows: sequence b's queries are its last
   * deltaOffsets[b+1] - deltaOffsets[b] tokens (at most its length).
   */
  deltaOffsets: Int32Array | readonly number[];
}

/**
 * M-FALCON cached inference (generative-recommenders' `delta_hstu_mha` /
 * `pytorch_cached_hstu_mha`): only the last tokens of each sequence (the candidates) are
 * queried, against k, v of the whole sequence (the cached history followed by the candidates'
 * own k, v; positions, rab and masks are those of the full sequence). `numTargets` defaults to
 * the candidate counts, so each candidate attends to the history and to itself only and the
 * candidates are independent of each other. Output row r of sequence b equals row
 * (len_b - delta_b + r) of `hstuAttentionReference` on the full sequence with the same options,
 * which is what makes one call scoring many candidates equal to scoring each alone.
 */
export function hstuCachedReference(
  deltaQ: Tensor,
  k: Tensor,
  v: Tensor,
  options: HstuCachedOptions,
): { o: Tensor } {
  checkOptions(options);
  const [Ld, H, D] = checkRank(deltaQ, 'deltaQ', 3, '[Ld, H, D]');
  checkFloat(deltaQ, 'deltaQ');
  const ks = checkRank(k, 'k', 3, '[L, H, D]');
  if (ks[1] !== H || ks[2] !== D)
    fail(
      ShapeError,
      'k',
      `shape [L, ${H}, ${D}] (heads and D as deltaQ)`,
      `shape ${formatShape(ks)}`,
    );
  const dOffsets = resolveOffsets(
    options.deltaOffsets,
    'deltaOffsets',
    Number.MAX_SAFE_INTEGER,
    Ld!,
  );
  const seq = options.seqOffsets;
  const batch = dOffsets.length - 1;
  if (seq && (seq as ArrayLike<number>).length !== batch + 1)
    fail(
      ValueError,
      'deltaOffsets',
      `length B+1 = ${(seq as ArrayLike<number>).length} (as seqOffsets)`,
      `length ${batch + 1}`,
    );
  const deltas = Array.from({ length: batch }, (_, b) => dOffsets[b + 1]! - dOffsets[b]!);
  // k stands in for q in the shared checks: the full-sequence queries are never read.
  const p = resolve(k, k, v, options);
  for (let b = 0; b < batch; b++) {
    const len = p.offsets[b + 1]! - p.offsets[b]!;
    if (deltas[b]! > len)
      fail(
        ValueError,
        'deltaOffsets',
        `at most the sequence length of queries per sequence (sequence ${b} has length ${len})`,
        `${deltas[b]} queries`,
      );
  }
  if (options.numTargets === undefined) p.targets = Int32Array.from(deltas);
  const Q = readF64(deltaQ, 'deltaQ');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const R = options.rab ? readF64(options.rab, 'rab') : undefined;
  const O = new Float64Array(Ld! * p.h * p.dv);
  for (let b = 0; b < batch; b++) {
    const len = p.offsets[b + 1]! - p.offsets[b]!;
    const first = len - deltas[b]!;
    for (let h = 0; h < p.h; h++) {
      pairs(p, b, first, (_i, j, li, lj) => {
        const qi = dOffsets[b]! + li - first;
        const z = logit(p, Q, qi, K, R, b, h, j, li, lj);
        const a = (z * sigmoid(z)) / p.n;
        const oo = (qi * p.h + h) * p.dv;
        const vo = (j * p.h + h) * p.dv;
        for (let c = 0; c < p.dv; c++) O[oo + c] = O[oo + c]! + a * V[vo + c]!;
      });
    }
  }
  return { o: f64(O, [Ld!, p.h, p.dv]) };
}
