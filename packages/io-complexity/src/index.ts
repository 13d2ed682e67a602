export * from './algorithms/index.js';
export * from './closed-form.js';
export { bandAllows, tileMasked } from './mask.js';
export * from './memory.js';
export * from './planner.js';
export * from './plot.js';
export {
  ALGORITHMS,
  type Algorithm,
  type IOCounts,
  type IOProblem,
  isAlgorithm,
  type SmallCacheBlocks,
  TILE_ALGORITHMS,
  type TileAlgorithm,
  type TileBlocks,
} from './problem.js';
