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
  /** The caller's arguments that set the size, for messages (default: N, d and those given of dv, causal, window). */
  args: readonly SizeArgument[];
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

/** One argument of the caller's that sets a problem's size, as they spelled it: name and value. */
export type SizeArgument = readonly [name: string, value: unknown];

/** The largest count this package reports: every count is an exact integer, so below 2^53. */
export const MAX_EXACT_COUNT = Number.MAX_SAFE_INTEGER;

/**
 * A count would pass 2^53, where integers stop being exact: the problem is too large for this
 * model (not for attention). `fields` are the caller's arguments that set the count, as they
 * named them (`N`, `d`, `dv`, `window` of an IOProblem; `seqLen`, `headDim` of planTiles), so a
 * command line can print its own flags in their place; `detail` is the message after them.
 */
export class ExactCountError extends ValueError {
  override name = 'ExactCountError';
  readonly fields: readonly string[];
  readonly detail: string;
  /** The count (or an upper bound on it) that is past the limit. */
  readonly count: number;
  readonly limit = MAX_EXACT_COUNT;
  constructor(args: readonly SizeArgument[], count: number, what: string, owner = 'problem') {
    const fields = args.map(([name]) => name);
    const values = args.map(([name, value]) => `${name} = ${describe(value)}`).join(', ');
    const shown = Number.isSafeInteger(count) ? String(count) : count.toExponential(3);
    const detail = `${what} counts up to ${shown} elements, past exact integer counts (at most 2^53 - 1 = ${MAX_EXACT_COUNT}); got ${values}`;
    super(`${owner} {${fields.join(', ')}}: ${detail}`, owner);
    this.fields = fields;
    this.detail = detail;
    this.count = count;
  }
}

/**
 * Throws an ExactCountError naming `p.args` unless `count` (an upper bound on every count that
 * `what` forms) is at most 2^53 - 1. Counts are sums and products of non-negative integers and
 * rounding is monotone, so a count computed in doubles stays <= 2^53 - 1 exactly when the true
 * one does: the check is exact, not a margin.
 */
export function checkExactCount(p: ResolvedProblem, count: number, what: string): void {
  if (!(count <= MAX_EXACT_COUNT)) throw new ExactCountError(p.args, count, what);
}

/**
 * Validates a problem. Counts are exact integers: every algorithm at least reads Q, K, V and
 * writes O once, N (2d + 2dv) elements, so that must stay below 2^53 here; each count is checked
 * against the work it actually does (blocks and band known) where it is formed.
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
  // A resolved problem passed back in keeps the names its caller used.
  const args: SizeArgument[] = Array.isArray(p.args)
    ? (p.args as SizeArgument[])
    : [
        ['N', N],
        ['d', d],
        ...(p.dv === undefined ? [] : [['dv', dv] as const]),
        ...(p.causal ? [['causal', true] as const] : []),
        ...(p.window === undefined ? [] : [['window', p.window] as const]),
      ];
  const resolved = { N, d, dv, M, left, right, masked: left >= 0 || right >= 0, args };
  checkExactCount(resolved, N * (2 * d + 2 * dv), 'reading Q, K, V and writing O once');
  return resolved;
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
