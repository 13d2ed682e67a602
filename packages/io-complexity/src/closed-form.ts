import { describe, ValueError } from '@attnkit/tensor';
import {
  ALGORITHMS,
  type Algorithm,
  checkAlgorithm,
  checkExactCount,
  checkSmallCacheBlocks,
  checkTileBlocks,
  counts,
  DENSE,
  type IOCounts,
  type IOProblem,
  type ResolvedProblem,
  requireDense,
  resolveProblem,
  type SmallCacheBlocks,
  type TileAlgorithm,
  type TileBlocks,
} from './problem.js';

/**
 * Exact slow-memory traffic of each simulated algorithm, in elements, as a function of
 * (N, d, dv, M) and the block sizes. With br = min(blockQ, N), bc = min(blockK, N),
 * Tr = ceil(N / br) query blocks and Tc = ceil(N / bc) key blocks (the last block of each may
 * be short, which is why the counts are sums of N over blocks, not products of block sizes):
 *
 *   standard      reads  N d + Tr N (d + dv) + (s + 1) N^2    (s = 1 if a row of S fits, else 2)
 *                 writes 2 N^2 + N dv
 *   fa1           reads  N (d + dv) + Tc N (d + dv + 2)
 *                 writes (Tc + 1) N (dv + 2)
 *   fa2           reads  N d + Tr N (d + dv)
 *                 writes N (dv + 1)
 *   fa2-backward  reads  2 N dv + N (d + dv) + Tc N (2d + dv + 2)
 *                 writes N (2d + dv + 1) + Tc N d
 *   small-cache   reads  2 T N d + T N dv + Tv (N^2 + 2N)     (T = ceil(N / min(tile, N)),
 *                 writes N^2 + 2N + N dv                        Tv = ceil(dv / min(tile, dv)))
 *
 * The simulator's counts equal these exactly (tests check a grid that includes ragged blocks).
 */

/** Elements of one working set, split by what the planner stores them as. */
export interface WorkingSet {
  /** Q, K, V, dO tiles: stored in the input dtype. */
  inputs: number;
  /** Scores, accumulators and row statistics: f32 whatever the input dtype. */
  accum: number;
}

/** Softmax chunk of standard attention: a whole row of S when it fits beside the row max and sum. */
export function softmaxChunk(N: number, M: number): number {
  return Math.max(1, Math.min(N, M - 2));
}

/** The working set of each phase of a tiled algorithm (br, bc already clamped to N). */
export function tileWorkingSets(
  algo: TileAlgorithm,
  p: ResolvedProblem,
  br: number,
  bc: number,
): WorkingSet[] {
  const { d, dv } = p;
  switch (algo) {
    case 'standard':
      return [
        { inputs: br * d + bc * d, accum: br * bc },
        { inputs: 0, accum: softmaxChunk(p.N, p.M) + 2 },
        { inputs: bc * dv, accum: br * dv + br * bc },
      ];
    case 'fa1':
      return [{ inputs: bc * (d + dv) + br * d, accum: br * dv + 6 * br + br * bc }];
    case 'fa2':
      return [{ inputs: br * d + bc * (d + dv), accum: br * dv + 2 * br + br * bc }];
    case 'fa2-backward':
      return [
        { inputs: 2 * br * dv, accum: br },
        {
          inputs: bc * (d + dv) + br * (d + dv),
          accum: bc * (d + dv) + br * d + 2 * br + 2 * br * bc,
        },
      ];
  }
}

function peakOf(sets: WorkingSet[]): number {
  return Math.max(...sets.map((s) => s.inputs + s.accum));
}

function ceilDiv(a: number, b: number): number {
  return Math.ceil(a / b);
}

/**
 * The closed-form counts of a tiled algorithm with br x bc blocks (already clamped to N),
 * unchecked: optimisers compare them over many blocks, where a count past 2^53 only loses
 * its last digits; what is reported goes through `tileIO`, which checks.
 */
export function tileCounts(
  algo: TileAlgorithm,
  p: ResolvedProblem,
  br: number,
  bc: number,
): IOCounts {
  const { N, d, dv } = p;
  const Tr = ceilDiv(N, br);
  const Tc = ceilDiv(N, bc);
  const peak = peakOf(tileWorkingSets(algo, p, br, bc));
  switch (algo) {
    case 'standard': {
      const s = softmaxChunk(N, p.M) === N ? 1 : 2;
      return counts(N * d + Tr * N * (d + dv) + (s + 1) * N * N, 2 * N * N + N * dv, peak);
    }
    case 'fa1':
      return counts(N * (d + dv) + Tc * N * (d + dv + 2), (Tc + 1) * N * (dv + 2), peak);
    case 'fa2':
      return counts(N * d + Tr * N * (d + dv), N * (dv + 1), peak);
    case 'fa2-backward':
      return counts(
        2 * N * dv + N * (d + dv) + Tc * N * (2 * d + dv + 2),
        N * (2 * d + dv + 1) + Tc * N * d,
        peak,
      );
  }
}

/**
 * Throws an ExactCountError (naming the problem's arguments) unless every count of `c` is
 * exact: the total is the largest of reads, writes and total, and the peak is checked beside it.
 */
export function checkCounts(p: ResolvedProblem, c: IOCounts, what: string): IOCounts {
  checkExactCount(p, Math.max(c.total, c.peakFast), what);
  return c;
}

/** Exact reads, writes and peak fast memory of a tiled algorithm with the given blocks. */
export function tileIO(algo: TileAlgorithm, problem: IOProblem, blocks: TileBlocks): IOCounts {
  const p = resolveProblem(problem);
  requireDense(p, `the closed form of ${algo}`);
  const { blockQ, blockK } = checkTileBlocks(blocks);
  const c = tileCounts(algo, p, Math.min(blockQ, p.N), Math.min(blockK, p.N));
  return checkCounts(p, c, `${algo} with blockQ ${blockQ}, blockK ${blockK} at M = ${p.M}`);
}

export function standardIO(problem: IOProblem, blocks: TileBlocks): IOCounts {
  return tileIO('standard', problem, blocks);
}
export function fa1IO(problem: IOProblem, blocks: TileBlocks): IOCounts {
  return tileIO('fa1', problem, blocks);
}
export function fa2IO(problem: IOProblem, blocks: TileBlocks): IOCounts {
  return tileIO('fa2', problem, blocks);
}
export function fa2BackwardIO(problem: IOProblem, blocks: TileBlocks): IOCounts {
  return tileIO('fa2-backward', problem, blocks);
}

function smallCachePeak(p: ResolvedProblem, tile: number, chunk: number): number {
  const t = Math.min(tile, p.N);
  const tv = Math.min(tile, p.dv);
  const cd = Math.min(chunk, p.d);
  const ck = Math.min(chunk, p.N);
  return Math.max(t * t + 2 * t * cd + 2 * t, t * tv + t * ck + ck * tv + 2 * t);
}

export function smallCacheIO(problem: IOProblem, blocks: SmallCacheBlocks): IOCounts {
  const p = resolveProblem(problem);
  requireDense(p, 'the closed form of small-cache');
  const { tile, chunk } = checkSmallCacheBlocks(blocks);
  return checkCounts(
    p,
    smallCacheCounts(p, tile, chunk),
    `small-cache with tile ${tile}, chunk ${chunk} at M = ${p.M}`,
  );
}

/** The small-cache closed form, unchecked (see `tileCounts`). */
export function smallCacheCounts(p: ResolvedProblem, tile: number, chunk: number): IOCounts {
  const { N, d, dv } = p;
  const T = ceilDiv(N, Math.min(tile, N));
  const Tv = ceilDiv(dv, Math.min(tile, dv));
  return counts(
    2 * T * N * d + T * N * dv + Tv * (N * N + 2 * N),
    N * N + 2 * N + N * dv,
    smallCachePeak(p, tile, chunk),
  );
}

/** The largest k in [1, max] with fits(k), fits monotone (true then false); 0 if fits(1) fails. */
export function largestFit(fits: (k: number) => boolean, max: number): number {
  if (max < 1 || !fits(1)) return 0;
  let lo = 1;
  let hi = 2;
  while (hi <= max && fits(hi)) {
    lo = hi;
    hi *= 2;
  }
  hi = Math.min(hi, max + 1);
  // Invariant: fits(lo), and hi > max or !fits(hi).
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid;
  }
  return lo;
}

/**
 * Block sizes minimising `cost` among those that `fit`, for up to `max` rows per block
 * (Infinity: unbounded) and at least `min` rows. Every cost here is non-increasing in blockK
 * (more keys per block never adds traffic), so for each blockQ only the largest fitting blockK
 * is tried. Ties go to the larger tile area, then the larger blockQ.
 */
export function optimalTileBlocks(
  max: number,
  fits: (blockQ: number, blockK: number) => boolean,
  cost: (blockQ: number, blockK: number) => number,
  min: TileBlocks = { blockQ: 1, blockK: 1 },
): (TileBlocks & { cost: number }) | undefined {
  let best: (TileBlocks & { cost: number }) | undefined;
  const k0 = min.blockK - 1;
  for (let bq = min.blockQ; bq <= max && fits(bq, min.blockK); bq++) {
    const bk = k0 + largestFit((k) => fits(bq, k0 + k), max - k0);
    const c = cost(bq, bk);
    if (
      best === undefined ||
      c < best.cost ||
      (c === best.cost &&
        (bq * bk > best.blockQ * best.blockK ||
          (bq * bk === best.blockQ * best.blockK && bq > best.blockQ)))
    ) {
      best = { blockQ: bq, blockK: bk, cost: c };
    }
  }
  return best;
}

/** Smallest fast memory (elements) in which `algo` runs at all: its working set with 1-row blocks. */
export function minimumM(algo: Algorithm, problem: Omit<IOProblem, 'M'>): number {
  checkAlgorithm(algo);
  const p = resolveProblem({ ...(problem as object), M: 1 });
  if (algo === 'small-cache') return smallCachePeak(p, 1, 1);
  if (algo === 'standard') return Math.max(2 * p.d + 1, 2 * p.dv + 1, 3);
  return peakOf(tileWorkingSets(algo, p, 1, 1));
}

function tooSmall(algo: Algorithm, p: ResolvedProblem): ValueError {
  return new ValueError(
    `M: expected at least ${minimumM(algo, p)} elements for ${algo} with d = ${p.d}, dv = ${p.dv}, got ${p.M}`,
    'M',
  );
}

/**
 * Algorithm 1's block sizes, Bc = ceil(M / 4d) and Br = min(Bc, d) (clamped to N). Theorem 2's
 * proof only needs them to be Theta(M / d): taken literally, K_j, V_j, Q_i, O_i alone fill
 * about M and S_ij with the row statistics overflows it. The simulator enforces the capacity,
 * so Bc is lowered one at a time (Br = min(Bc, d)) until the working set fits.
 */
export function fa1PaperBlocks(problem: IOProblem): TileBlocks {
  const p = resolveProblem(problem);
  for (let bc = Math.min(ceilDiv(p.M, 4 * p.d), p.N); bc >= 1; bc--) {
    const br = Math.min(bc, p.d);
    if (peakOf(tileWorkingSets('fa1', p, br, bc)) <= p.M) return { blockQ: br, blockK: bc };
  }
  throw tooSmall('fa1', p);
}

/**
 * Block sizes the simulator and `ioReport` use when none are given: the paper's for FA1
 * (`fa1PaperBlocks`); for the others the blocks minimising the closed-form I/O among those
 * whose working set fits in M (for small-cache: the largest tile, then the largest chunk).
 */
export function defaultBlocks(algo: 'small-cache', problem: IOProblem): SmallCacheBlocks;
export function defaultBlocks(algo: TileAlgorithm, problem: IOProblem): TileBlocks;
export function defaultBlocks(algo: Algorithm, problem: IOProblem): TileBlocks | SmallCacheBlocks;
export function defaultBlocks(algo: Algorithm, problem: IOProblem): TileBlocks | SmallCacheBlocks {
  checkAlgorithm(algo);
  // A mask (causal / window) keeps the dense problem's blocks: the optimum is the dense one's.
  const p: ResolvedProblem = { ...resolveProblem(problem), ...DENSE };
  if (algo === 'fa1') return fa1PaperBlocks(p);
  if (algo === 'small-cache') {
    const tile = largestFit((t) => smallCachePeak(p, t, 1) <= p.M, Math.max(p.N, p.dv));
    if (tile === 0) throw tooSmall(algo, p);
    const chunk = largestFit((c) => smallCachePeak(p, tile, c) <= p.M, Math.max(p.N, p.d));
    return { tile, chunk };
  }
  const best = optimalTileBlocks(
    p.N,
    (bq, bk) => peakOf(tileWorkingSets(algo, p, bq, bk)) <= p.M,
    // Unchecked: a candidate past 2^53 is only compared; the chosen blocks are checked when counted.
    (bq, bk) => tileCounts(algo, p, bq, bk).total,
  );
  if (best === undefined) throw tooSmall(algo, p);
  return { blockQ: best.blockQ, blockK: best.blockK };
}

/** Closed-form counts of `algo` with `blocks` (default: `defaultBlocks`). */
export function closedFormIO(
  algo: Algorithm,
  problem: IOProblem,
  blocks?: TileBlocks | SmallCacheBlocks,
): IOCounts {
  checkAlgorithm(algo);
  const b = blocks ?? defaultBlocks(algo, problem);
  return algo === 'small-cache'
    ? smallCacheIO(problem, b as SmallCacheBlocks)
    : tileIO(algo, problem, b as TileBlocks);
}

/**
 * A lower bound on the slow-memory I/O of any attention algorithm that forms each score
 * s_ij = q_i . k_j by adding up its d products q_ik k_jk (no fast matrix multiplication) and
 * computes no product twice, with a fast memory of M elements (Hong & Kung's red-blue pebble
 * game; the constant is ours, Saha & Ye 2024 prove the order without the two restrictions):
 *
 *   lowerBound = max( N (2d + 2dv),  N^2 d^2 / (M + d sqrt(M)) - M ).
 *
 * First term: every element of Q, K, V is read and every element of O written at least once.
 * Second term: cut the run into segments of M I/Os each. In one segment:
 * - the Q entries (set A) and K entries (set B) it touches were resident at its start or loaded
 *   in it, so |A| + |B| <= M + M;
 * - call a pair (i, j) crossing if a partial sum of s_ij (a lone product or s_ij itself) is resident
 *   at the segment's start or end, or is loaded or stored in it. Each crossing pair owns one of
 *   those values, which share the start residents and the loads with A and B, so
 *   |A| + |B| + |C| <= M (start) + M (loads + stores) + M (end) = 3M;
 * - a non-crossing pair with a product in the segment has all d products there (nothing of
 *   s_ij enters or leaves it), so rows q_i and k_j lie whole in A and B: at most
 *   (|A| / d)(|B| / d) d <= M^2 / d such products;
 * - a crossing pair's products are triples (i, j, k) with (i, k) in A, (j, k) in B, (i, j) in C:
 *   at most sqrt(|A| |B| |C|) <= M^{3/2} (Loomis-Whitney; largest at |A| = |B| = |C| = M).
 * So a segment computes at most M^2 / d + M^{3/2} of the N^2 d products, at least
 * N^2 d / (M^2 / d + M^{3/2}) segments are needed, and all but the last move M elements:
 * I/O >= M (N^2 d / (M^2 / d + M^{3/2}) - 1), which is the second term.
 * For M >= d^2 it is >= N^2 d^2 / (2M) - M, FlashAttention's Theta(N^2 d^2 / M) (Dao et al.
 * Prop. 3); for M < d^2 it is >= N^2 d / (2 sqrt(M)) - M, Saha & Ye's small-cache order. The
 * backward pass recomputes S and moves more, so the bound holds for it too.
 */
export function lowerBound(N: number, d: number, M: number, dv: number = d): number {
  const p = resolveProblem({ N, d, M, dv });
  const io = p.N * (2 * p.d + 2 * p.dv);
  const pebble = (p.N * p.N * p.d * p.d) / (p.M + p.d * Math.sqrt(p.M)) - p.M;
  return Math.max(io, pebble);
}

export interface IOReportRow {
  algo: Algorithm;
  N: number;
  d: number;
  M: number;
  reads: number;
  writes: number;
  total: number;
  peakFast: number;
  lowerBound: number;
  ratio: number;
}

/** Builds the report row of one algorithm's counts. */
export function reportRow(algo: Algorithm, problem: IOProblem, c: IOCounts): IOReportRow {
  const p = resolveProblem(problem);
  const lb = lowerBound(p.N, p.d, p.M, p.dv);
  return {
    algo,
    N: p.N,
    d: p.d,
    M: p.M,
    reads: c.reads,
    writes: c.writes,
    total: c.total,
    peakFast: c.peakFast,
    lowerBound: lb,
    ratio: c.total / lb,
  };
}

/**
 * For each algorithm that runs in M (M >= `minimumM`), its closed-form I/O with default
 * blocks and the ratio to `lowerBound`. `algos` restricts the list (default: all).
 */
export function ioReport(
  problem: IOProblem,
  algos: readonly Algorithm[] = ALGORITHMS,
): IOReportRow[] {
  const p = resolveProblem(problem);
  if (!Array.isArray(algos)) {
    throw new ValueError(
      `algos: expected an array of algorithm names, got ${describe(algos)}`,
      'algos',
    );
  }
  const rows: IOReportRow[] = [];
  for (const algo of algos) {
    checkAlgorithm(algo, 'algos');
    if (p.M < minimumM(algo, p)) continue;
    rows.push(reportRow(algo, p, closedFormIO(algo, p)));
  }
  return rows;
}
