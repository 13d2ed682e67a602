import { describe, ValueError } from '@attnkit/tensor';

/** The algorithms this package models, in the order reports list them. */
export const ALGORITHMS = ['standard', 'fa1', 'fa2', 'fa2-backward', 'small-cache'] as const;
export type Algorithm = (typeof ALGORITHMS)[number];

/** The tiled algorithms: a query block of `blockQ` rows meets a key/value block of `blockK` rows. */
export const TILE_ALGORITHMS = ['standard', 'fa1', 'fa2', 'fa2-backward'] as const;
export type TileAlgorithm = (typeof TILE_ALGORITHMS)[number];

/** Block sizes of standard attention and FlashAttention (the papers' B_r = blockQ, B_c = blockK). */
export interface TileBlocks {
  blockQ: number;
  blockK: number;
}

/**
 * Block sizes of the small-cache algorithm: `tile` is the side of the square S and O tiles it
 * accumulates in fast memory, `chunk` how many head-dim (or key) columns it streams per load.
 */
export interface SmallCacheBlocks {
  tile: number;
  chunk: number;
}

/**
 * One attention head: N queries and N keys, head dim d (values dv, default d), fast memory M
 * elements. `causal` / `window` select the band of @attnkit/attention's mask rule (spec.ts
 * `keyRange`: bottom-right causal, sliding window [left, right], -1 = unbounded); only `fa2`
 * and `fa2-backward` model it (they skip tiles with no allowed pair); default dense.
 */
export interface IOProblem {
  N: number;
  d: number;
  dv?: number;
  M: number;
  causal?: boolean;
  window?: readonly [number, number];
}

export interface ResolvedProblem {
  N: number;
  d: number;
  dv: number;
  M: number;
  /** The band as spec.ts's AttentionProblem holds it: causal folded in (right = 0); -1 = unbounded. */
  left: number;
  right: number;
  /** Whether the band masks anything (left or right bounded). */
  masked: boolean;
}

/** Slow-memory traffic in elements (reads: slow -> fast, writes: fast -> slow) and peak fast use. */
export interface IOCounts {
  reads: number;
  writes: number;
  total: number;
  peakFast: number;
}

export function positiveInt(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw new ValueError(`${name}: expected a positive integer, got ${describe(value)}`, name);
  }
  return value;
}

export function isAlgorithm(value: unknown): value is Algorithm {
  return typeof value === 'string' && (ALGORITHMS as readonly string[]).includes(value);
}

export function checkAlgorithm(value: unknown, name = 'algo'): Algorithm {
  if (!isAlgorithm(value)) {
    throw new ValueError(
      `${name}: expected one of ${ALGORITHMS.join(', ')}, got ${describe(value)}`,
      name,
    );
  }
  return value;
}

/**
 * Validates a problem. Counts are exact integers, so the largest term (about 4 N^2 (d + dv)
 * elements for the backward pass) must stay below 2^53.
 */
export function resolveProblem(problem: unknown): ResolvedProblem {
  if (problem === null || typeof problem !== 'object') {
    throw new ValueError(
      `problem: expected an object { N, d, M, dv? }, got ${describe(problem)}`,
      'problem',
    );
  }
  const p = problem as Record<string, unknown>;
  const N = positiveInt(p.N, 'N');
  const d = positiveInt(p.d, 'd');
  const dv = p.dv === undefined ? d : positiveInt(p.dv, 'dv');
  const M = positiveInt(p.M, 'M');
  const { left, right } = resolveBand(p.causal, p.window);
  if (8 * N * N * (d + dv + 4) > Number.MAX_SAFE_INTEGER) {
    throw new ValueError(
      `N: expected N^2 (d + dv) small enough for exact integer counts (< 2^50), got N = ${N} with d = ${d}, dv = ${dv}`,
      'N',
    );
  }
  return { N, d, dv, M, left, right, masked: left >= 0 || right >= 0 };
}

/** The band of a dense (unmasked) problem. */
export const DENSE = { left: -1, right: -1, masked: false } as const;

/** causal / window resolved as spec.ts resolveAttentionProblem does: causal folds into right = 0. */
export function resolveBand(causal: unknown, window: unknown): { left: number; right: number } {
  if (causal !== undefined && typeof causal !== 'boolean') {
    throw new ValueError(`causal: expected a boolean, got ${describe(causal)}`, 'causal');
  }
  const w = window ?? [-1, -1];
  if (
    !Array.isArray(w) ||
    w.length !== 2 ||
    !w.every((x) => typeof x === 'number' && Number.isSafeInteger(x) && x >= -1)
  ) {
    throw new ValueError(
      `window: expected [left, right] integers >= -1 (-1 = unbounded), got ${describe(window)}`,
      'window',
    );
  }
  const left = w[0] as number;
  let right = w[1] as number;
  if (causal) right = right < 0 ? 0 : Math.min(right, 0);
  return { left, right };
}

/** Throws for a masked problem in an algorithm that models dense attention only. */
export function requireDense(p: ResolvedProblem, what: string): void {
  if (p.masked) {
    throw new ValueError(
      `causal/window: ${what} models dense attention only (fa2 and fa2-backward model the mask)`,
      'causal',
    );
  }
}

export function checkTileBlocks(blocks: unknown, name = 'blocks'): TileBlocks {
  if (blocks === null || typeof blocks !== 'object') {
    throw new ValueError(`${name}: expected { blockQ, blockK }, got ${describe(blocks)}`, name);
  }
  const b = blocks as Record<string, unknown>;
  return {
    blockQ: positiveInt(b.blockQ, `${name}.blockQ`),
    blockK: positiveInt(b.blockK, `${name}.blockK`),
  };
}

export function checkSmallCacheBlocks(blocks: unknown, name = 'blocks'): SmallCacheBlocks {
  if (blocks === null || typeof blocks !== 'object') {
    throw new ValueError(`${name}: expected { tile, chunk }, got ${describe(blocks)}`, name);
  }
  const b = blocks as Record<string, unknown>;
  return {
    tile: positiveInt(b.tile, `${name}.tile`),
    chunk: positiveInt(b.chunk, `${name}.chunk`),
  };
}

export function counts(reads: number, writes: number, peakFast: number): IOCounts {
  return { reads, writes, total: reads + writes, peakFast };
}
