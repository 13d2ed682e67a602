import { DTypeError, describe, ValueError } from '@attnkit/tensor';
import { optimalTileBlocks, tileCounts, tileWorkingSets, type WorkingSet } from './closed-form.js';
import {
  DENSE,
  ExactCountError,
  MAX_EXACT_COUNT,
  positiveInt,
  type ResolvedProblem,
  type SizeArgument,
} from './problem.js';

/**
 * Tile sizes for FlashAttention kernels from a device's fast-memory size: the (blockQ, blockK)
 * with the least predicted slow-memory I/O (the closed forms of `closed-form.ts`) whose working
 * set fits. Q, K, V and dO tiles are counted in the input dtype; scores, accumulators and row
 * statistics in f32, as the kernels keep them.
 */

export type PlannerDType = 'f32' | 'f16' | 'bf16';
export type PlannerAlgorithm = 'fa1' | 'fa2' | 'fa2-backward';

const DTYPE_BYTES: Record<PlannerDType, number> = { f32: 4, f16: 2, bf16: 2 };
const ACCUM_BYTES = 4;
const PLANNER_ALGORITHMS: readonly PlannerAlgorithm[] = ['fa1', 'fa2', 'fa2-backward'];

export interface PlanTilesOptions {
  /** Fast memory in bytes: workgroup storage (WebGPU maxComputeWorkgroupStorageSize) or a CPU cache. */
  fastMemoryBytes: number;
  headDim: number;
  /** Value head dim (default headDim). */
  headDimV?: number;
  dtype: PlannerDType;
  /** Sequence length N; without it the plan is for long sequences (N -> infinity). */
  seqLen?: number;
  /** Which pass the tiles are for (default 'fa2', the forward kernels). */
  algo?: PlannerAlgorithm;
  /**
   * Smallest blocks the kernel accepts (default 1). The I/O model is blind to arithmetic
   * efficiency: FA2's forward traffic does not depend on blockK at all, so unconstrained it
   * spends the memory on blockQ and leaves blockK at whatever still fits (often 1).
   */
  minBlockQ?: number;
  minBlockK?: number;
  /**
   * Largest blocks the kernel accepts (default unbounded, or seqLen). Kernels whose tiles have
   * a fixed extent (a SIMD width, a workgroup shape) pin a block with min = max.
   */
  maxBlockQ?: number;
  maxBlockK?: number;
}

export interface TilePlan {
  blockQ: number;
  blockK: number;
  /**
   * Predicted slow-memory I/O in elements for N = seqLen. Without seqLen: elements moved per
   * N^2 as N grows (so predictedIO * N^2 approximates the I/O of a long sequence).
   */
  predictedIO: number;
  /** Working set in elements (the simulator's peakFast for these blocks). */
  fastElements: number;
  /** Working set in bytes (inputs in dtype, the rest in f32); <= fastMemoryBytes. */
  fastBytes: number;
}

function footprint(sets: WorkingSet[], inputBytes: number): { elements: number; bytes: number } {
  let elements = 0;
  let bytes = 0;
  for (const s of sets) {
    elements = Math.max(elements, s.inputs + s.accum);
    bytes = Math.max(bytes, s.inputs * inputBytes + s.accum * ACCUM_BYTES);
  }
  return { elements, bytes };
}

/** Leading N^2 coefficient of each closed form (Tr ~ N / blockQ, Tc ~ N / blockK). */
function asymptoticIO(
  algo: PlannerAlgorithm,
  d: number,
  dv: number,
  bq: number,
  bk: number,
): number {
  switch (algo) {
    case 'fa1':
      return (d + 2 * dv + 4) / bk;
    case 'fa2':
      return (d + dv) / bq;
    case 'fa2-backward':
      return (3 * d + dv + 2) / bk;
  }
}

function checkPlannerDType(value: unknown): PlannerDType {
  if (value !== 'f32' && value !== 'f16' && value !== 'bf16') {
    throw new DTypeError(`dtype: expected f32, f16 or bf16, got ${describe(value)}`, 'dtype');
  }
  return value;
}

/** Working set of `algo` with the given blocks, in elements and bytes. */
export function tileFootprint(options: {
  algo: PlannerAlgorithm;
  headDim: number;
  headDimV?: number;
  dtype: PlannerDType;
  blockQ: number;
  blockK: number;
}): { elements: number; bytes: number } {
  if (options === null || typeof options !== 'object') {
    throw new ValueError(`options: expected an object, got ${describe(options)}`, 'options');
  }
  const algo = checkPlannerAlgorithm(options.algo);
  const d = positiveInt(options.headDim, 'headDim');
  const dv = options.headDimV === undefined ? d : positiveInt(options.headDimV, 'headDimV');
  const eb = DTYPE_BYTES[checkPlannerDType(options.dtype)];
  const bq = positiveInt(options.blockQ, 'blockQ');
  const bk = positiveInt(options.blockK, 'blockK');
  const p: ResolvedProblem = { N: Math.max(bq, bk), d, dv, M: 1, ...DENSE, args: [] };
  return footprint(tileWorkingSets(algo, p, bq, bk), eb);
}

function checkPlannerAlgorithm(value: unknown): PlannerAlgorithm {
  if (!(PLANNER_ALGORITHMS as readonly unknown[]).includes(value)) {
    throw new ValueError(
      `algo: expected one of ${PLANNER_ALGORITHMS.join(', ')}, got ${describe(value)}`,
      'algo',
    );
  }
  return value as PlannerAlgorithm;
}

function upperBound(value: unknown, name: string, min: number, minName: string): number {
  if (value === undefined) return Number.POSITIVE_INFINITY;
  const max = positiveInt(value, name);
  if (max < min) {
    throw new ValueError(`${name}: expected at least ${minName} = ${min}, got ${max}`, name);
  }
  return max;
}

/**
 * The (blockQ, blockK) minimising predicted I/O subject to the working set fitting in
 * `fastMemoryBytes`. Ties go to the larger tile area, then the larger blockQ. With `seqLen`
 * blocks are at most seqLen rows and the exact closed form is minimised; without it the
 * large-N rate.
 */
export function planTiles(options: PlanTilesOptions): TilePlan {
  if (options === null || typeof options !== 'object') {
    throw new ValueError(
      `options: expected { fastMemoryBytes, headDim, dtype, headDimV?, seqLen?, algo? }, got ${describe(options)}`,
      'options',
    );
  }
  const budget = positiveInt(options.fastMemoryBytes, 'fastMemoryBytes');
  const d = positiveInt(options.headDim, 'headDim');
  const dv = options.headDimV === undefined ? d : positiveInt(options.headDimV, 'headDimV');
  const eb = DTYPE_BYTES[checkPlannerDType(options.dtype)];
  const N = options.seqLen === undefined ? undefined : positiveInt(options.seqLen, 'seqLen');
  const algo = checkPlannerAlgorithm(options.algo ?? 'fa2');
  const minQ = options.minBlockQ === undefined ? 1 : positiveInt(options.minBlockQ, 'minBlockQ');
  const minK = options.minBlockK === undefined ? 1 : positiveInt(options.minBlockK, 'minBlockK');
  for (const [name, value] of [
    ['minBlockQ', minQ],
    ['minBlockK', minK],
  ] as const) {
    if (N !== undefined && value > N) {
      throw new ValueError(`${name}: expected at most seqLen = ${N}, got ${value}`, name);
    }
  }
  const maxQ = upperBound(options.maxBlockQ, 'maxBlockQ', minQ, 'minBlockQ');
  const maxK = upperBound(options.maxBlockK, 'maxBlockK', minK, 'minBlockK');
  // The working sets of these algorithms do not depend on N or M.
  // Counts past 2^53 name the planner's own arguments, not the IOProblem fields behind them.
  const args: SizeArgument[] = [
    ['seqLen', N],
    ['headDim', d],
    ...(options.headDimV === undefined ? [] : [['headDimV', dv] as const]),
  ];
  const p: ResolvedProblem = { N: N ?? 1, d, dv, M: 1, ...DENSE, args };
  const bytes = (bq: number, bk: number) => footprint(tileWorkingSets(algo, p, bq, bk), eb).bytes;
  const best = optimalTileBlocks(
    N ?? Number.POSITIVE_INFINITY,
    (bq, bk) => bq <= maxQ && bk <= maxK && bytes(bq, bk) <= budget,
    N === undefined
      ? (bq, bk) => asymptoticIO(algo, d, dv, bq, bk)
      : (bq, bk) => tileCounts(algo, p, bq, bk).total,
    { blockQ: minQ, blockK: minK },
  );
  if (best === undefined) {
    throw new ValueError(
      `fastMemoryBytes: expected at least ${bytes(minQ, minK)} bytes (${minQ} x ${minK} tiles of ${algo} at headDim ${d}, headDimV ${dv}, ${options.dtype}), got ${budget}`,
      'fastMemoryBytes',
    );
  }
  const fp = footprint(tileWorkingSets(algo, p, best.blockQ, best.blockK), eb);
  // With seqLen the prediction is an exact count: check it (the candidates were only compared).
  if (N !== undefined && !(best.cost <= MAX_EXACT_COUNT)) {
    throw new ExactCountError(
      args,
      best.cost,
      `${algo} with blockQ ${best.blockQ}, blockK ${best.blockK}`,
      'options',
    );
  }
  return {
    blockQ: best.blockQ,
    blockK: best.blockK,
    predictedIO: best.cost,
    fastElements: fp.elements,
    fastBytes: fp.bytes,
  };
}
