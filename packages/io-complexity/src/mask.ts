import { keyRange } from '@attnkit/attention';
import type { ResolvedProblem } from './problem.js';

/**
 * Tile classification by @attnkit/attention's normative mask rule (spec.ts `keyRange`, the
 * causal / sliding-window band of `allowed`): whether query rows [r0, r0 + rows) x keys
 * [c0, c0 + cols) hold no allowed pair, so a mask-aware FlashAttention never loads the tile.
 * With Nq = Nk every row's range is non-empty and both its ends move by at most one key per
 * row, so the rows' ranges cover [lo(first row), hi(last row)) without a gap: the tile is
 * skipped iff it lies outside that interval (the tests check this against `allowed`).
 */
export function tileMasked(
  p: ResolvedProblem,
  r0: number,
  rows: number,
  c0: number,
  cols: number,
): boolean {
  if (!p.masked) return false;
  const [loFirst] = keyRange(p, r0, p.N, p.N);
  const [, hiLast] = keyRange(p, r0 + rows - 1, p.N, p.N);
  return hiLast <= c0 || loFirst >= c0 + cols;
}

/** Whether query i may attend key j under the band (spec.ts `keyRange`). */
export function bandAllows(p: ResolvedProblem, i: number, j: number): boolean {
  const [lo, hi] = keyRange(p, i, p.N, p.N);
  return j >= lo && j < hi;
}
