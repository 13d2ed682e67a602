import { defaultBlocks, softmaxChunk } from '../closed-form.js';
import {
  type Algorithm,
  checkAlgorithm,
  checkSmallCacheBlocks,
  checkTileBlocks,
  type IOProblem,
  resolveProblem,
  type SmallCacheBlocks,
  type TileBlocks,
} from '../problem.js';
import type { BackwardData, ForwardData, SimulateOptions, SimulationResult } from './common.js';
import { simulateFa1 } from './fa1.js';
import { simulateFa2 } from './fa2.js';
import { simulateFa2Backward } from './fa2-backward.js';
import { simulateSmallCache } from './small-cache.js';
import { simulateStandard } from './standard.js';

export type { BackwardData, ForwardData, SimulateOptions, SimulationResult } from './common.js';
export { simulateFa1, simulateFa2, simulateFa2Backward, simulateSmallCache, simulateStandard };

/** Runs `algo`'s loops against a two-level memory of M elements and returns its exact counts. */
export function simulate(
  algo: Algorithm,
  problem: IOProblem,
  options: SimulateOptions<TileBlocks | SmallCacheBlocks, ForwardData | BackwardData> = {},
): SimulationResult {
  switch (checkAlgorithm(algo)) {
    case 'standard':
      return simulateStandard(problem, options as SimulateOptions<TileBlocks>);
    case 'fa1':
      return simulateFa1(problem, options as SimulateOptions<TileBlocks>);
    case 'fa2':
      return simulateFa2(problem, options as SimulateOptions<TileBlocks>);
    case 'fa2-backward':
      return simulateFa2Backward(problem, options as SimulateOptions<TileBlocks, BackwardData>);
    case 'small-cache':
      return simulateSmallCache(problem, options as SimulateOptions<SmallCacheBlocks>);
  }
}

/**
 * About how many tile steps (innermost block visits, each a few loads and stores) `simulate`
 * takes for `algo` with `blocks` (default: `defaultBlocks`): its running time, at roughly
 * 0.1-0.5 us a step counting only. With a two-sided band fa2 and fa2-backward visit only the
 * blocks the band reaches; dense runs visit every (query block, key block) pair, so a large
 * dense N simulates for hours while its closed form is instant. Lets a caller refuse first.
 */
export function simulationSteps(
  algo: Algorithm,
  problem: IOProblem,
  blocks?: TileBlocks | SmallCacheBlocks,
): number {
  checkAlgorithm(algo);
  const p = resolveProblem(problem);
  const { N, d, dv } = p;
  const ceil = Math.ceil;
  if (algo === 'small-cache') {
    const b = blocks === undefined ? defaultBlocks(algo, p) : checkSmallCacheBlocks(blocks);
    const t = Math.min(b.tile, N);
    const T = ceil(N / t);
    return (
      T * T * ceil(d / Math.min(b.chunk, d)) +
      T * ceil(dv / Math.min(b.tile, dv)) * ceil(N / Math.min(b.chunk, N))
    );
  }
  const b = blocks === undefined ? defaultBlocks(algo, p) : checkTileBlocks(blocks);
  const br = Math.min(b.blockQ, N);
  const bc = Math.min(b.blockK, N);
  const Tr = ceil(N / br);
  const Tc = ceil(N / bc);
  // Blocks of the other operand one block meets under a two-sided band (all of them otherwise).
  const band = p.left >= 0 && p.right >= 0;
  const reach = (own: number, other: number, total: number) =>
    band ? Math.min(total, ceil((own + p.left + p.right) / other) + 2) : total;
  switch (algo) {
    case 'standard':
      return 2 * Tr * Tc + 2 * N * ceil(N / softmaxChunk(N, p.M));
    case 'fa1':
      return Tr * Tc;
    case 'fa2':
      return Tr * reach(br, bc, Tc);
    case 'fa2-backward':
      return 2 * Tr + Tc * reach(bc, br, Tr);
  }
}
