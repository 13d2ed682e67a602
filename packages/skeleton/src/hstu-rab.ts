import { ShapeError, type Tensor, ValueError } from '@attnkit/tensor';

/**
 * Built-in score hook: HSTU's bucketed relative attention bias (issue 10 item 2; the paper's
 * `RelativeBucketedTimeAndPositionBasedBias`, @attnkit/attention `HstuBucketedRab`), computed
 * inside the kernels from two small learned tables and per-token timestamps instead of a dense
 * [B, H, N, N] bias:
 *
 *     z(i, j) = scale q_i.k_j + posTable[h, pc] + timeTable[h, tc]
 *     pc = clamp(j - i + (P - 1) / 2, 0, P - 1)                  (position column, P odd)
 *     tc = max t with thresholds[t] <= |nextTime(i) - keyTime(j)|   (time column, T = thresholds.length)
 *
 * i, j positions within sequence b (of nk keys; query row r is i = r + nk - nq, as the HSTU mask
 * hook's rule, so M-FALCON's candidates read their full-sequence positions). keyTime(j) is
 * ts(j) and nextTime(i) = ts(i + 1) (the token after i; the last token's own), both rebased per
 * sequence to non-negative int32 (hstuRabTimes), so |dt| is an exact int32 on every backend;
 * the bucket of |dt| is found in `thresholds` (hstuTimeThresholds: the float64 reference's
 * bucket boundaries as integers), so a kernel never evaluates log/sqrt and never lands one
 * bucket off. It joins the score first (before the family's dense rab or user score mods), and
 * the backward returns the tables' gradients (dZ summed per column over the pairs the mask
 * allows) when `grad` is set. Tables with one row (heads 1) are shared by all heads.
 */
export interface HstuRabHook {
  kind: 'hstuRab';
  /** f32 [posHeads, P], P odd; on the problem's device. Absent: no position term. */
  positionTable?: Tensor | undefined;
  /** f32 [timeHeads, T]; on the problem's device. Absent: no time term. */
  timestampTable?: Tensor | undefined;
  /**
   * With timestampTable: per token of the key axis (length totalK, THD order), ts(j) minus its
   * sequence's smallest timestamp (0 <= x < 2^31).
   */
  keyTime?: Int32Array | undefined;
  /** With timestampTable: per token of the key axis, ts(j + 1) (the last: ts(j)), rebased the same way. */
  nextTime?: Int32Array | undefined;
  /**
   * With timestampTable: at most T entries, thresholds[0] = 0, non-decreasing; column of |dt| =
   * the last t with thresholds[t] <= |dt| (see hstuTimeThresholds, hstuTimeColumn).
   */
  thresholds?: Int32Array | undefined;
  /** The backward also returns dPositionTable / dTimestampTable (f32, the tables' shapes). */
  grad: boolean;
}

/** The bucket function of the time term (@attnkit/attention hstuTimeBucket). */
export type HstuTimeBucketFn = 'log' | 'sqrt';

/** hstuTimeBucket of @attnkit/attention for a non-negative integer |dt| (float64, as upstream). */
export function hstuTimeBucketOf(
  a: number,
  numTime: number,
  fn: HstuTimeBucketFn,
  divisor: number,
): number {
  const x = fn === 'log' ? Math.log(Math.max(a, 1)) / divisor : Math.sqrt(a) / divisor;
  return Math.min(Math.max(Math.trunc(x), 0), numTime - 1);
}

/**
 * The integer bucket boundaries of the time term: thresholds[t] = the smallest integer a >= 0
 * with hstuTimeBucketOf(a) >= t, for the buckets t = 0, 1, ... that some int32 reaches (at most
 * T entries: with upstream's log / 0.301 no int32 gets past bucket 71). The bucket is monotone
 * in a, so bucket(a) = max t with thresholds[t] <= a: exactly the float64 reference's for every
 * int32 |dt|. Pure; typed errors name the argument.
 */
export function hstuTimeThresholds(
  numTime: number,
  fn: HstuTimeBucketFn = 'log',
  divisor: number = fn === 'log' ? 0.301 : 1,
): Int32Array {
  if (!Number.isInteger(numTime) || numTime < 1)
    throw new ValueError(
      `numTime: expected a positive integer (the time table's columns), got ${numTime}`,
      'numTime',
    );
  if (fn !== 'log' && fn !== 'sqrt')
    throw new ValueError(`bucketFn: expected 'log' or 'sqrt', got ${String(fn)}`, 'bucketFn');
  if (!(typeof divisor === 'number' && Number.isFinite(divisor) && divisor > 0))
    throw new ValueError(
      `bucketDivisor: expected a positive finite number, got ${divisor}`,
      'bucketDivisor',
    );
  const MAX = 0x7fffffff;
  const out = new Int32Array(numTime);
  for (let t = 1; t < numTime; t++) {
    // Binary search the smallest a in [thresholds[t-1], MAX] with bucket(a) >= t.
    let lo = out[t - 1]!;
    let hi = MAX;
    // No int32 reaches bucket t (nor any later one): the list ends here.
    if (hstuTimeBucketOf(hi, numTime, fn, divisor) < t) return out.slice(0, t);
    while (lo < hi) {
      const mid = lo + Math.floor((hi - lo) / 2);
      if (hstuTimeBucketOf(mid, numTime, fn, divisor) >= t) hi = mid;
      else lo = mid + 1;
    }
    out[t] = lo;
  }
  return out;
}

/** The time column of |dt| = a (a non-negative int32): max t with thresholds[t] <= a. */
export function hstuTimeColumn(thresholds: Int32Array, a: number): number {
  let lo = 0;
  let hi = thresholds.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (thresholds[mid]! <= a) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The position column of query position i, key position j for a table of P (odd) columns. */
export function hstuPositionColumn(i: number, j: number, numPos: number): number {
  return Math.min(Math.max(j - i + (numPos - 1) / 2, 0), numPos - 1);
}

/**
 * keyTime and nextTime of HstuRabHook from per-token timestamps (length L, the key axis of the
 * jagged batch given by `offsets`): each sequence rebased to its smallest timestamp. Timestamps
 * must be integers (seconds, as upstream's) whose span within a sequence is below 2^31, so
 * every |dt| is an exact int32: a ValueError naming `name` otherwise.
 */
export function hstuRabTimes(
  offsets: Int32Array,
  timestamps: ArrayLike<number>,
  name = 'bucketedRab.timestamps',
): { keyTime: Int32Array; nextTime: Int32Array } {
  const L = offsets[offsets.length - 1]!;
  if (timestamps.length !== L)
    throw new ShapeError(
      `${name}: expected length ${L} (one per token), got length ${timestamps.length}`,
      name,
    );
  const keyTime = new Int32Array(L);
  const nextTime = new Int32Array(L);
  for (let b = 0; b + 1 < offsets.length; b++) {
    const s = offsets[b]!;
    const e = offsets[b + 1]!;
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    for (let t = s; t < e; t++) {
      const x = timestamps[t]!;
      if (typeof x !== 'number' || !Number.isInteger(x))
        throw new ValueError(
          `${name}: expected integer timestamps (e.g. seconds) for the kernels, got ${x} at ${t}`,
          name,
        );
      min = Math.min(min, x);
      max = Math.max(max, x);
    }
    if (e > s && max - min > 0x7fffffff)
      throw new ValueError(
        `${name}: expected the timestamps of a sequence to span less than 2^31, got ${max - min} in sequence ${b}`,
        name,
      );
    for (let t = s; t < e; t++) {
      keyTime[t] = timestamps[t]! - min;
      nextTime[t] = timestamps[Math.min(t + 1, e - 1)]! - min;
    }
  }
  return { keyTime, nextTime };
}
