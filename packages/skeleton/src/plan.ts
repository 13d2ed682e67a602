import { planTiles, tileFootprint } from '@attnkit/io-complexity';
import { describe, ValueError } from '@attnkit/tensor';

/**
 * Tile sizes of the FlashAttention kernels from the I/O model of @attnkit/io-complexity.
 * FlashAttention's point (Dao et al. 2022, Sec. 3.1) is that a Q tile, a K/V tile, the score
 * tile and the running output fit in fast memory; on a CPU that is the per-core L2, so tiles
 * are sized against a byte budget, and among the tiles that fit the planner takes those with
 * the least predicted slow-memory traffic (planTiles' closed forms).
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
/**
 * Compute-efficiency floor of the key block (kept when it fits). FA2's forward traffic does not
 * depend on blockK, so the I/O model alone would trade key rows for query rows down to 1; each
 * key tile pays a rescale of the O accumulator and a pass over the row statistics.
 */
const MIN_KEY_TILE = 16;
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

/** Powers of two up to `cap`, and `n` itself when it is shorter (a tile never outgrows its sequence). */
function powerTiles(n: number, cap: number): number[] {
  const out: number[] = [];
  for (let t = 1; t <= cap && t < n; t *= 2) out.push(t);
  if (n <= cap) out.push(Math.max(1, n));
  return out;
}

/**
 * The candidate pair of least predicted FA2-forward I/O at N = seqLen (planTiles with the block
 * pinned, so its closed form and its f32 working set decide), ties to the larger tile, then the
 * larger blockQ. Only pairs whose working set fits `budget` are priced.
 */
function leastIO(
  qs: readonly number[],
  ks: readonly number[],
  seqLen: number,
  d: number,
  dv: number,
  budget: number,
  minBlockK = 1,
): (FlashTilePlan & { predictedIO: number }) | undefined {
  let best: (FlashTilePlan & { predictedIO: number }) | undefined;
  for (const bq of qs) {
    for (const bk of ks) {
      if (bk < minBlockK) continue;
      const fit = tileFootprint({
        algo: 'fa2',
        headDim: d,
        headDimV: dv,
        dtype: 'f32',
        blockQ: bq,
        blockK: bk,
      });
      if (fit.bytes > budget) continue;
      const { predictedIO } = planTiles({
        fastMemoryBytes: fit.bytes,
        headDim: d,
        headDimV: dv,
        dtype: 'f32',
        seqLen,
        minBlockQ: bq,
        maxBlockQ: bq,
        minBlockK: bk,
        maxBlockK: bk,
      });
      if (
        best === undefined ||
        predictedIO < best.predictedIO ||
        (predictedIO === best.predictedIO &&
          (bq * bk > best.blockQ * best.blockK ||
            (bq * bk === best.blockQ * best.blockK && bq > best.blockQ)))
      ) {
        best = { blockQ: bq, blockK: bk, predictedIO };
      }
    }
  }
  return best;
}

/**
 * Tiles of the pure-TS kernels: among power-of-two tiles up to 128 rows (or the sequence length
 * when shorter) whose f32 forward working set fits `fastMemoryBytes`, the pair with the least
 * FA2-forward I/O predicted by @attnkit/io-complexity's `planTiles` for N = max(nq, nk), with a
 * key block of at least 16 rows when one fits; ties go to the larger tile. With `blockSparse`,
 * tiles must divide its blocks so every tile lies inside one mask block: the divisor pairs (each
 * up to 128) are the candidates.
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
  const bs = problem.blockSparse;
  if (bs !== undefined && (bs === null || typeof bs !== 'object')) {
    throw new ValueError(
      `blockSparse: expected { blockQ, blockK }, got ${describe(bs)}`,
      'blockSparse',
    );
  }
  const sq = bs === undefined ? 0 : check(bs.blockQ, 'blockSparse.blockQ', 1);
  const sk = bs === undefined ? 0 : check(bs.blockK, 'blockSparse.blockK', 1);
  const key = `${nq},${nk},${d},${dv},${budget},${sq},${sk}`;
  const cached = planned.get(key);
  if (cached !== undefined) return { ...cached };
  const plan = searchFlashTiles(nq, nk, d, dv, Math.floor(budget), sq, sk);
  if (planned.size >= PLAN_CACHE_SIZE) planned.clear();
  planned.set(key, plan);
  return { ...plan };
}

/** Plans already made: pricing the candidates costs about 10 us, more than a small call's kernel. */
const planned = new Map<string, FlashTilePlan>();
const PLAN_CACHE_SIZE = 256;

/** planFlashTiles' search; sq = sk = 0 without block sparsity. */
function searchFlashTiles(
  nq: number,
  nk: number,
  d: number,
  dv: number,
  budget: number,
  sq: number,
  sk: number,
): FlashTilePlan {
  const sparse = sq > 0;
  const qs = sparse ? divisors(sq, MAX_TILE) : powerTiles(nq, MAX_TILE);
  const ks = sparse ? divisors(sk, MAX_TILE) : powerTiles(nk, MAX_TILE);
  const minBlockK = sparse ? 1 : Math.min(MIN_KEY_TILE, Math.max(1, nk));
  const seqLen = Math.max(nq, nk, ...qs, ...ks);
  const best =
    leastIO(qs, ks, seqLen, d, dv, budget, minBlockK) ??
    (leastIO(qs, ks, seqLen, d, dv, budget) as FlashTilePlan);
  // A tile longer than its sequence would only allocate rows that never hold data.
  return {
    blockQ: Math.max(1, Math.min(best.blockQ, nq)),
    blockK: Math.max(1, Math.min(best.blockK, nk)),
  };
}

/**
 * Bytes of tile scratch the TS kernels allocate for `plan` (the larger of forward and backward):
 * forward Q, K, V tiles, S tile, O accumulator, m, l and per-row key ranges; backward K, V
 * tiles, dK, dV accumulators, Q, dO tiles, S/P and dP/dS tiles and key ranges. Independent of
 * the sequence length: FlashAttention never holds an N x N matrix. (FA1's m, l and the
 * backward's D, one f32 per query row, live beside the outputs as in the papers' slow memory.)
 * With `scoreMods`, the backward keeps one more score-sized tile: the mods' chain-rule factor.
 */
export function workspaceBytes(
  plan: FlashTilePlan,
  d: number,
  dv: number,
  options: { scoreMods?: boolean } = {},
): number {
  if (plan === null || typeof plan !== 'object') {
    throw new ValueError(`plan: expected { blockQ, blockK }, got ${describe(plan)}`, 'plan');
  }
  const bq = check(plan.blockQ, 'plan.blockQ', 1);
  const bk = check(plan.blockK, 'plan.blockK', 1);
  check(d, 'd', 1);
  check(dv, 'dv', 1);
  // Int32 key ranges count 4 bytes per entry, as f32 does.
  const forward = forwardElements(bq, bk, d, dv) + 2 * bq;
  const scoreTiles = options?.scoreMods ? 3 : 2;
  const backward = 2 * bk * d + 2 * bk * dv + bq * d + bq * dv + scoreTiles * bq * bk + 2 * bq;
  return Math.max(forward, backward) * F32;
}

export interface NativeTileProblem {
  nq: number;
  nk: number;
  d: number;
  dv: number;
  /** Fast memory per core in bytes (default 1 MiB, the L2 of this project's Zen 5 cores). */
  fastMemoryBytes?: number;
  /**
   * Query rows the engine's forward keeps resident against each key tile (default 256: four
   * 64-lane AVX-512 blocks per task; AVX2 runs 8 x 16, the scalar kernels 8 x 8).
   */
  forwardQueryRows?: number;
  /** Keys per backward block (default 64, the AVX-512 lanes; 16 with AVX2, 8 scalar). */
  backwardKeyRows?: number;
}

/**
 * @attnkit/native's tile hints. `blockK` is the forward's key tile, `blockQ` the backward's query
 * rows per block (NativeAttentionProblem's meaning); undefined leaves the engine's default.
 */
export interface NativeTilePlan {
  blockQ: number | undefined;
  blockK: number | undefined;
}

/** The engine accepts hints of 1..1024 rows. */
const NATIVE_MAX_HINT = 1024;
/** Below a 16-row tile the engine's per-tile work (rescaling O, reloading statistics) dominates. */
const NATIVE_MIN_HINT = 16;

/**
 * The free block of one pass from planTiles: `pinned` rows fixed by the engine's SIMD layout,
 * the other block the least-I/O choice in [16, 1024] that fits `budget` (FA2's traffic does not
 * depend on it, so planTiles' tie-break gives it all the memory left). Undefined when even the
 * smallest tile overflows the budget.
 */
function nativeHint(
  algo: 'fa2' | 'fa2-backward',
  n: number,
  d: number,
  dv: number,
  budget: number,
  pinned: number,
): number | undefined {
  const fixed = Math.min(pinned, n);
  const lo = Math.min(NATIVE_MIN_HINT, n);
  const hi = Math.min(NATIVE_MAX_HINT, n);
  const [minQ, maxQ, minK, maxK] = algo === 'fa2' ? [fixed, fixed, lo, hi] : [lo, hi, fixed, fixed];
  const smallest = tileFootprint({
    algo,
    headDim: d,
    headDimV: dv,
    dtype: 'f32',
    blockQ: minQ,
    blockK: minK,
  });
  if (smallest.bytes > budget) return undefined;
  const plan = planTiles({
    fastMemoryBytes: budget,
    headDim: d,
    headDimV: dv,
    dtype: 'f32',
    seqLen: n,
    algo,
    minBlockQ: minQ,
    maxBlockQ: maxQ,
    minBlockK: minK,
    maxBlockK: maxK,
  });
  return algo === 'fa2' ? plan.blockK : plan.blockQ;
}

/**
 * Tile hints for @attnkit/native from the I/O model with a per-core L2 budget: the forward's
 * key tile against `forwardQueryRows` resident queries (planTiles, FA2 forward), the backward's
 * query rows against a `backwardKeyRows` key block (planTiles, FA2 backward), each clamped to
 * its sequence. Both passes' traffic is fixed by the engine's blocks, so the hints take the
 * largest tiles that fit (fewer tile switches); on (1, 8, 1024 | 4096, 64) each hint alone
 * (forward key tile 512-1024, backward query block 763) timed within noise of the engine's 64.
 */
export function planNativeTiles(problem: NativeTileProblem): NativeTilePlan {
  if (problem === null || typeof problem !== 'object') {
    throw new ValueError(`problem: expected an object, got ${describe(problem)}`, 'problem');
  }
  const nq = check(problem.nq, 'nq', 0);
  const nk = check(problem.nk, 'nk', 0);
  const d = check(problem.d, 'd', 1);
  const dv = check(problem.dv, 'dv', 1);
  const budget = check(problem.fastMemoryBytes ?? 1 << 20, 'fastMemoryBytes', 1);
  const fwdRows = check(problem.forwardQueryRows ?? 256, 'forwardQueryRows', 1);
  const bwdRows = check(problem.backwardKeyRows ?? 64, 'backwardKeyRows', 1);
  if (nq === 0 || nk === 0) return { blockQ: undefined, blockK: undefined };
  // The model has one sequence length; the longer one bounds both blocks.
  const n = Math.max(nq, nk);
  const blockK = nativeHint('fa2', n, d, dv, budget, fwdRows);
  const blockQ = nativeHint('fa2-backward', n, d, dv, budget, bwdRows);
  return {
    blockQ: blockQ === undefined ? undefined : Math.min(blockQ, nq),
    blockK: blockK === undefined ? undefined : Math.min(blockK, nk),
  };
}
