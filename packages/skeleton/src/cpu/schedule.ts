import { UnsupportedError } from '@attnkit/attention';
import { describe, ValueError } from '@attnkit/tensor';
import type { ScheduleHook } from '../hooks.js';

/**
 * The TS forward's `schedule` hook: how the key tiles of one (b, h, Q tile) are cut into
 * contiguous ranges, each reduced to a partial (m, l, acc), and how the partials are merged.
 * 'band' is one range (the plain FA2 loop); 'splitK' (FlashDecoding) is `splits` ranges;
 * 'streamK' (LeanAttention) cuts the key tiles of all Q tiles together (cpu/partition.ts).
 */

/** A half-open range of key tile indices: tiles begin, begin + 1, ..., end - 1. */
export type KeyTileRange = readonly [begin: number, end: number];

function checkInt(value: unknown, name: string, min: number): asserts value is number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    const what = min === 1 ? 'a positive integer' : `an integer >= ${min}`;
    throw new ValueError(`${name}: expected ${what}, got ${describe(value)}`, name);
  }
}

/**
 * Fixed split-K planner: cuts key tiles firstTile..lastTile (inclusive; lastTile < firstTile
 * means no tiles) into `splits` contiguous, balanced half-open ranges, in order. Every tile is
 * in exactly one range; range sizes differ by at most one (the first n mod splits ranges hold
 * one more); with fewer tiles than splits the trailing ranges are empty (begin === end).
 * Pure; ValueError naming firstTile / lastTile / splits for non-integer arguments.
 */
export function splitKeyTiles(firstTile: number, lastTile: number, splits: number): KeyTileRange[] {
  checkInt(firstTile, 'firstTile', 0);
  checkInt(lastTile, 'lastTile', -1);
  checkInt(splits, 'splits', 1);
  const n = Math.max(0, lastTile - firstTile + 1);
  const base = Math.floor(n / splits);
  const extra = n % splits;
  const out: KeyTileRange[] = [];
  let begin = firstTile;
  for (let s = 0; s < splits; s++) {
    const end = begin + base + (s < extra ? 1 : 0);
    out.push([begin, end]);
    begin = end;
  }
  return out;
}

/** A validated `hooks.schedule`: key ranges per Q tile, or the stream-K worker count. */
export interface ResolvedSchedule {
  /** Key ranges per Q tile: 1 for 'band' (and for 'streamK', whose ranges the planner sets). */
  splits: number;
  /** 'streamK': the workers the planner cuts all Q tiles' key tiles among; else undefined. */
  streamKWorkers: number | undefined;
}

const KINDS = '{ kind: "band" }, { kind: "splitK", splits } or { kind: "streamK", workers }';

function positiveCount(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1)
    throw new ValueError(`${name}: expected a positive integer, got ${describe(value)}`, name);
  return value;
}

/**
 * Validates `hooks.schedule` (every kind; absent = 'band'). ValueError naming `schedule` (not
 * an object), `schedule.kind` (unknown kind), `schedule.splits` or `schedule.workers` (not a
 * positive integer).
 */
export function resolveSchedule(schedule: ScheduleHook | undefined): ResolvedSchedule {
  if (schedule === undefined) return { splits: 1, streamKWorkers: undefined };
  if (schedule === null || typeof schedule !== 'object') {
    throw new ValueError(`schedule: expected ${KINDS}, got ${describe(schedule)}`, 'schedule');
  }
  if (schedule.kind === 'band') return { splits: 1, streamKWorkers: undefined };
  if (schedule.kind === 'splitK') {
    return { splits: positiveCount(schedule.splits, 'schedule.splits'), streamKWorkers: undefined };
  }
  if (schedule.kind === 'streamK') {
    return { splits: 1, streamKWorkers: positiveCount(schedule.workers, 'schedule.workers') };
  }
  throw new ValueError(
    `schedule.kind: expected "band", "splitK" or "streamK", got ${describe((schedule as { kind: unknown }).kind)}`,
    'schedule.kind',
  );
}

/**
 * The schedule as a reader that implements 'band' and 'splitK' only reads it: validates it
 * (resolveSchedule) and returns the number of key ranges per Q tile (1 for 'band' or absent).
 * A valid 'streamK' schedule throws UnsupportedError naming `schedule` rather than silently
 * running 'band'. The backends themselves read `resolveSchedule` (every one runs stream-K).
 */
export function scheduleSplits(schedule: ScheduleHook | undefined): number {
  const r = resolveSchedule(schedule);
  if (r.streamKWorkers !== undefined) {
    const why =
      'this reader implements band and splitK only (the backends read resolveSchedule, which includes stream-K)';
    throw new UnsupportedError(
      `schedule: expected { kind: "band" } or { kind: "splitK", splits } on this backend (${why}), got { kind: "streamK", workers: ${r.streamKWorkers} }`,
      'schedule',
      { native: why, webgpu: why },
    );
  }
  return r.splits;
}

/**
 * The combine pass of split-K, and stream-K's fix-up: merges the partials in slots 1..n-1 into slot 0, rows [0, rows)
 * (slot s, row r: m[s * bq + r], l[s * bq + r], acc[(s * bq + r) * dv + c]). softmax uses the
 * associative online-softmax rule (KERNELS.md "LeanAttention"):
 *   m = max_s m_s,  l = sum_s l_s e^(m_s - m),  acc = sum_s acc_s e^(m_s - m);
 * a partial that saw no key (m_s = -inf, l_s = 0, acc_s = 0) contributes nothing, and a row no
 * partial saw keeps m = -inf, l = 0, acc = 0. The pointwise normalisations' (sigmoid, silu)
 * partials are plain sums of w v: acc = sum_s acc_s (m and l are not read). n = 1 leaves slot 0 as it is.
 */
export function combinePartials(
  n: number,
  rows: number,
  bq: number,
  dv: number,
  pointwise: boolean,
  m: Float32Array,
  l: Float32Array,
  acc: Float32Array,
): void {
  if (n <= 1) return;
  for (let r = 0; r < rows; r++) {
    const a0 = r * dv;
    if (pointwise) {
      for (let s = 1; s < n; s++) {
        const as = (s * bq + r) * dv;
        for (let c = 0; c < dv; c++) acc[a0 + c] = acc[a0 + c]! + acc[as + c]!;
      }
      continue;
    }
    let mx = Number.NEGATIVE_INFINITY;
    for (let s = 0; s < n; s++) if (m[s * bq + r]! > mx) mx = m[s * bq + r]!;
    if (mx === Number.NEGATIVE_INFINITY) {
      // No partial saw a key: slot 0 already holds m = -inf, l = 0, acc = 0 (unless a
      // partial was poisoned by NaN scores: l = NaN carries over).
      for (let s = 1; s < n; s++) if (Number.isNaN(l[s * bq + r]!)) l[r] = Number.NaN;
      continue;
    }
    const f0 = l[r]! > 0 || Number.isNaN(l[r]!) ? Math.exp(m[r]! - mx) : 0;
    let lSum = l[r]! * f0;
    for (let c = 0; c < dv; c++) acc[a0 + c] = acc[a0 + c]! * f0;
    for (let s = 1; s < n; s++) {
      const ls = l[s * bq + r]!;
      if (ls === 0) continue;
      const f = Math.exp(m[s * bq + r]! - mx);
      lSum += ls * f;
      const as = (s * bq + r) * dv;
      for (let c = 0; c < dv; c++) acc[a0 + c] = acc[a0 + c]! + acc[as + c]! * f;
    }
    m[r] = mx;
    l[r] = lSum;
  }
}
