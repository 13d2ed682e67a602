export * from './algorithms/index.js';
export * from './closed-form.js';
export { bandAllows, tileMasked } from './mask.js';
export * from './memory.js';
export * from './planner.js';
export * from './plot.js';
export {
  ALGORITHMS,
  type Algorithm,
  ExactCountError,
  type IOCounts,
  type IOProblem,
  isAlgorithm,
  MAX_EXACT_COUNT,
  type SizeArgument,
  type SmallCacheBlocks,
  TILE_ALGORITHMS,
  type TileAlgorithm,
  type TileBlocks,
} from './problem.js';
