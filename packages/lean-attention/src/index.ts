export {
  DEFAULT_SPLITS,
  defaultLeanSplits,
  defaultLeanWorkers,
  type LeanAttentionOptions,
  type LeanAttentionResult,
  type LeanPartition,
  leanAttention,
  leanTiledOptions,
  WEBGPU_ASSUMED_COMPUTE_UNITS,
  WEBGPU_DEFAULT_SPLITS,
  WEBGPU_SPLIT_BUDGET,
  WORKERS_PER_UNIT,
} from './attention.js';
export { CacheFullError } from './errors.js';
export {
  type BlockTables,
  DEFAULT_MAX_QUERY_LENGTH,
  KvCache,
  type KvCacheAttendOptions,
  type KvCacheDType,
  type KvCacheOptions,
} from './kv-cache.js';
