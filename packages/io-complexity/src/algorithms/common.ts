import { describe, ShapeError, ValueError } from '@attnkit/tensor';
import { defaultBlocks, smallCacheCounts, tileCounts } from '../closed-form.js';
import { tileMasked } from '../mask.js';
import { type SlowArray, TwoLevelMemory } from '../memory.js';
import {
  checkExactCount,
  checkTileBlocks,
  type IOCounts,
  type ResolvedProblem,
  type SmallCacheBlocks,
  type TileAlgorithm,
  type TileBlocks,
} from '../problem.js';

/** Row-major inputs of one head: q, k are N x d, v is N x dv. */
export interface ForwardData {
  q: Float64Array;
  k: Float64Array;
  v: Float64Array;
}

/** Inputs of the backward pass: the forward's inputs, its output o (N x dv) and lse (N), and dO (N x dv). */
export interface BackwardData extends ForwardData {
  o: Float64Array;
  lse: Float64Array;
  dO: Float64Array;
}

export interface SimulationResult extends IOCounts {
  /** With `data`: the values the algorithm left in slow memory (o, lse / dq, dk, dv). */
  outputs?: Record<string, Float64Array>;
}

export interface SimulateOptions<B, D = ForwardData> {
  /** Block sizes; default: see `defaultBlocks`. */
  blocks?: B;
  /** Input values: run the arithmetic too (small sizes), not only the counts. */
  data?: D;
}

export function checkOptions(options: unknown): void {
  if (options === null || typeof options !== 'object') {
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  }
}

/** Checks `data.<name>` is a Float64Array of `length` elements. */
export function checkArray(data: unknown, name: string, length: number): Float64Array {
  const value = (data as Record<string, unknown>)[name];
  if (!(value instanceof Float64Array) || value.length !== length) {
    throw new ShapeError(
      `data.${name}: expected a Float64Array of ${length} elements, got ${describe(value)}`,
      `data.${name}`,
    );
  }
  return value;
}

/** Memory for one run; compute mode iff input values were given. */
export function newMemory(p: ResolvedProblem, data: unknown): TwoLevelMemory {
  if (data !== undefined && (data === null || typeof data !== 'object')) {
    throw new ValueError(
      `data: expected an object of Float64Arrays, got ${describe(data)}`,
      'data',
    );
  }
  return new TwoLevelMemory(p.M, { compute: data !== undefined });
}

/**
 * Query and key block sizes of a tiled algorithm: the caller's (checked) or its default, clamped
 * to N; the run's counts are checked to stay exact (`checkSimulationCounts`).
 */
export function tileBlocks(
  algo: 'standard' | 'fa1' | 'fa2' | 'fa2-backward',
  p: ResolvedProblem,
  blocks: TileBlocks | undefined,
): { br: number; bc: number } {
  const b = blocks === undefined ? defaultBlocks(algo, p) : checkTileBlocks(blocks);
  const clamped = { br: Math.min(b.blockQ, p.N), bc: Math.min(b.blockK, p.N) };
  checkSimulationCounts(algo, p, clamped);
  return clamped;
}

/**
 * The start every simulated algorithm shares: a memory of capacity M (computing iff `data` is
 * given) with Q, K and V declared in slow memory, and the softmax scale.
 */
export function setupInputs(p: ResolvedProblem, data: unknown) {
  const { N, d, dv } = p;
  const mem = newMemory(p, data);
  const Q: SlowArray = mem.declare('Q', N, d, data ? checkArray(data, 'q', N * d) : undefined);
  const K: SlowArray = mem.declare('K', N, d, data ? checkArray(data, 'k', N * d) : undefined);
  const V: SlowArray = mem.declare('V', N, dv, data ? checkArray(data, 'v', N * dv) : undefined);
  return { mem, compute: mem.compute, scale: 1 / Math.sqrt(d), Q, K, V };
}

/** Visits [0, n) in blocks of `b`: (start, length), the last block possibly short. */
export function forBlocks(
  n: number,
  b: number,
  body: (start: number, length: number) => void,
): void {
  for (let start = 0; start < n; start += b) body(start, Math.min(b, n - start));
}

export function result(
  mem: TwoLevelMemory,
  outputs?: Record<string, Float64Array>,
): SimulationResult {
  const c = mem.counts();
  return outputs === undefined ? c : { ...c, outputs };
}

/**
 * Visits the blocks of `b` rows partitioning [0, n) that meet [lo, hi), in order. With a band
 * only those can hold an allowed pair, so the loops cost the band's work, not (N / b)^2 visits.
 */
export function forBlocksIn(
  n: number,
  b: number,
  lo: number,
  hi: number,
  body: (start: number, length: number) => void,
): void {
  for (let start = Math.floor(lo / b) * b; start < Math.min(hi, n); start += b) {
    body(start, Math.min(b, n - start));
  }
}

/**
 * Visits the key blocks the query rows [r0, r0 + rows) load: those meeting the keys the rows may
 * attend, [lo(first row), hi(last row)) by spec.ts's keyRange (tileMasked's interval), or all.
 */
export function forKeyBlocks(
  p: ResolvedProblem,
  r0: number,
  rows: number,
  bc: number,
  body: (c0: number, cols: number) => void,
): void {
  if (!p.masked) {
    forBlocks(p.N, bc, body);
    return;
  }
  const lo = p.left < 0 ? 0 : Math.max(0, r0 - p.left);
  const hi = p.right < 0 ? p.N : Math.min(p.N, r0 + rows + p.right);
  forBlocksIn(p.N, bc, lo, hi, (c0, cols) => {
    if (!tileMasked(p, r0, rows, c0, cols)) body(c0, cols);
  });
}

/**
 * Visits the query blocks that load the keys [c0, c0 + cols): rows i with keyRange(i) meeting
 * them, i in [c0 - right, c0 + cols + left) (clipped; unbounded sides reach every row), each
 * block still filtered by tileMasked so the rule stays spec.ts's.
 */
export function forQueryBlocks(
  p: ResolvedProblem,
  c0: number,
  cols: number,
  br: number,
  body: (r0: number, rows: number) => void,
): void {
  if (!p.masked) {
    forBlocks(p.N, br, body);
    return;
  }
  const lo = p.right < 0 ? 0 : Math.max(0, c0 - p.right);
  const hi = p.left < 0 ? p.N : Math.min(p.N, c0 + cols + p.left);
  forBlocksIn(p.N, br, lo, hi, (r0, rows) => {
    if (!tileMasked(p, r0, rows, c0, cols)) body(r0, rows);
  });
}

/**
 * Rows of the other operand a block of `own` rows loads under the band: the rows it may meet
 * (own + left + right when both sides are bounded) plus a partial block at each end, at most N.
 */
function bandReach(p: ResolvedProblem, own: number, other: number): number {
  if (p.left < 0 || p.right < 0) return p.N;
  return Math.min(p.N, own + p.left + p.right + 2 * other);
}

/**
 * Checks, before a simulation runs, that its counts stay exact (below 2^53), naming the
 * problem's arguments otherwise. The bound is the work the run does: the dense closed form with
 * these blocks, and for fa2 / fa2-backward with a two-sided band only the tiles it loads
 * (each query block meets at most br + left + right + 2 bc keys; each key block likewise).
 */
export function checkSimulationCounts(
  algo: TileAlgorithm | 'small-cache',
  p: ResolvedProblem,
  blocks: { br: number; bc: number } | SmallCacheBlocks,
): void {
  if (algo === 'small-cache') {
    const { tile, chunk } = blocks as SmallCacheBlocks;
    const c = smallCacheCounts(p, tile, chunk);
    checkExactCount(
      p,
      Math.max(c.total, c.peakFast),
      `simulating small-cache with tile ${tile}, chunk ${chunk}`,
    );
    return;
  }
  const { br, bc } = blocks as { br: number; bc: number };
  const { N, d, dv } = p;
  const dense = tileCounts(algo, p, br, bc);
  let total = dense.total;
  if (algo === 'fa2') {
    total = N * d + N * (dv + 1) + Math.ceil(N / br) * bandReach(p, br, bc) * (d + dv);
  } else if (algo === 'fa2-backward') {
    total =
      2 * N * dv +
      N * (d + dv) +
      N * (2 * d + dv + 1) +
      Math.ceil(N / bc) * bandReach(p, bc, br) * (3 * d + dv + 2);
  }
  checkExactCount(
    p,
    Math.max(total, dense.peakFast),
    `simulating ${algo} with blockQ ${br}, blockK ${bc}`,
  );
}
