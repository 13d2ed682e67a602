import { describe, ShapeError, ValueError } from '@attnkit/tensor';
import { defaultBlocks } from '../closed-form.js';
import { type SlowArray, TwoLevelMemory } from '../memory.js';
import {
  checkTileBlocks,
  type IOCounts,
  type ResolvedProblem,
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

/** Query and key block sizes of a tiled algorithm: the caller's (checked) or its default, clamped to N. */
export function tileBlocks(
  algo: 'standard' | 'fa1' | 'fa2' | 'fa2-backward',
  p: ResolvedProblem,
  blocks: TileBlocks | undefined,
): { br: number; bc: number } {
  const b = blocks === undefined ? defaultBlocks(algo, p) : checkTileBlocks(blocks);
  return { br: Math.min(b.blockQ, p.N), bc: Math.min(b.blockK, p.N) };
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
