import {
  type Algorithm,
  checkAlgorithm,
  type IOProblem,
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
