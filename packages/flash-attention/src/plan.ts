import { describe, ValueError } from '@attnkit/tensor';

/**
 * Tile sizes of the pure-TS FlashAttention kernels. FlashAttention's point (Dao et al. 2022,
 * Sec. 3.1) is that a Q tile, a K/V tile, the score tile and the running output fit in fast
 * memory; on a CPU that is the per-core L2, so tiles are sized against a byte budget.
 */

export interface FlashTilePlan {
  blockQ: number;
  blockK: number;
}

export interface FlashTileProblem {
  nq: number;
  nk: number;
  d: number;
  dv: number;
  /** Fast-memory budget in bytes (default 256 KiB, a CPU L2). */
  fastMemoryBytes?: number;
  /** Block-sparse mask blocks: tiles must divide them so masked blocks are skipped whole. */
  blockSparse?: { blockQ: number; blockK: number };
}

const DEFAULT_FAST_MEMORY_BYTES = 256 * 1024;
/** Past 128 rows a larger tile no longer cuts per-tile overhead noticeably (measured at
 * d = 64: 4.0 vs 4.1 GFLOP/s from 64 to 128), and coarser tiles skip less of a causal mask. */
const MAX_TILE = 128;
const F32 = 4;

function check(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) {
    throw new ValueError(`${name}: expected an integer >= ${min}, got ${describe(value)}`, name);
  }
  return value;
}

/** f32 elements of the forward working set: Q, K, V tiles, S tile, O accumulator, m and l. */
function forwardElements(bq: number, bk: number, d: number, dv: number): number {
  return bq * d + bk * d + bk * dv + bq * bk + bq * dv + 2 * bq;
}

/** Divisors of `n` up to `cap`, ascending. */
function divisors(n: number, cap: number): number[] {
  const out: number[] = [];
  for (let t = 1; t <= Math.min(n, cap); t++) if (n % t === 0) out.push(t);
  return out;
}

/**
 * Square power-of-two tiles (up to 128) whose forward working set fits `fastMemoryBytes`,
 * clamped to the sequence lengths. With `blockSparse`, tiles must divide its blocks so every
 * tile lies inside one mask block: the divisor pair (each up to 128) of largest area that fits.
 */
export function planFlashTiles(problem: FlashTileProblem): FlashTilePlan {
  if (problem === null || typeof problem !== 'object') {
    throw new ValueError(`problem: expected an object, got ${describe(problem)}`, 'problem');
  }
  const nq = check(problem.nq, 'nq', 0);
  const nk = check(problem.nk, 'nk', 0);
  const d = check(problem.d, 'd', 1);
  const dv = check(problem.dv, 'dv', 1);
  const budget = problem.fastMemoryBytes ?? DEFAULT_FAST_MEMORY_BYTES;
  if (typeof budget !== 'number' || !Number.isFinite(budget) || budget <= 0) {
    throw new ValueError(
      `fastMemoryBytes: expected a positive number of bytes, got ${describe(budget)}`,
      'fastMemoryBytes',
    );
  }
  if (forwardElements(1, 1, d, dv) * F32 > budget) {
    throw new ValueError(
      `fastMemoryBytes: expected at least ${forwardElements(1, 1, d, dv) * F32} bytes (one row of each tile at d = ${d}, dv = ${dv}), got ${budget}`,
      'fastMemoryBytes',
    );
  }
  let blockQ = 1;
  let blockK = 1;
  const bs = problem.blockSparse;
  if (bs === undefined) {
    while (blockQ < MAX_TILE && forwardElements(2 * blockQ, 2 * blockQ, d, dv) * F32 <= budget) {
      blockQ *= 2;
    }
    blockK = blockQ;
  } else {
    if (bs === null || typeof bs !== 'object') {
      throw new ValueError(
        `blockSparse: expected { blockQ, blockK }, got ${describe(bs)}`,
        'blockSparse',
      );
    }
    const qs = divisors(check(bs.blockQ, 'blockSparse.blockQ', 1), MAX_TILE);
    const ks = divisors(check(bs.blockK, 'blockSparse.blockK', 1), MAX_TILE);
    for (const tq of qs) {
      for (const tk of ks) {
        const fits = forwardElements(tq, tk, d, dv) * F32 <= budget;
        if (fits && tq * tk > blockQ * blockK) {
          blockQ = tq;
          blockK = tk;
        }
      }
    }
  }
  // A tile longer than its sequence would only allocate rows that never hold data.
  return { blockQ: Math.max(1, Math.min(blockQ, nq)), blockK: Math.max(1, Math.min(blockK, nk)) };
}

/**
 * Bytes of tile scratch the TS kernels allocate for `plan` (the larger of forward and backward):
 * forward Q, K, V tiles, S tile, O accumulator, m, l and per-row key ranges; backward K, V
 * tiles, dK, dV accumulators, Q, dO tiles, S/P and dP/dS tiles and key ranges. Independent of
 * the sequence length: FlashAttention never holds an N x N matrix. (FA1's m, l and the
 * backward's D, one f32 per query row, live beside the outputs as in the papers' slow memory.)
 */
export function workspaceBytes(plan: FlashTilePlan, d: number, dv: number): number {
  if (plan === null || typeof plan !== 'object') {
    throw new ValueError(`plan: expected { blockQ, blockK }, got ${describe(plan)}`, 'plan');
  }
  const bq = check(plan.blockQ, 'plan.blockQ', 1);
  const bk = check(plan.blockK, 'plan.blockK', 1);
  check(d, 'd', 1);
  check(dv, 'dv', 1);
  // Int32 key ranges count 4 bytes per entry, as f32 does.
  const forward = forwardElements(bq, bk, d, dv) + 2 * bq;
  const backward = 2 * bk * d + 2 * bk * dv + bq * d + bq * dv + 2 * bq * bk + 2 * bq;
  return Math.max(forward, backward) * F32;
}
