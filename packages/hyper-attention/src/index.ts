export { type HyperGrads, hyperAttention, hyperAttentionBackward } from './attention.js';
export { mergeSoftmaxRow } from './combine.js';
export {
  AngularLsh,
  type AngularLshOptions,
  grayCode,
  grayRank,
  type LshSort,
  MAX_PROJECTIONS,
  sortByBucket,
} from './lsh.js';
export {
  HYPER_DEFAULTS,
  type HyperAttentionOptions,
  type HyperAttentionResult,
  type HyperBackend,
} from './options.js';
export { diagonalBlocks, type HyperJob, planHyperJobs } from './plan.js';
export { blockRun, sampleKeys, samplingWeight } from './sampler.js';
