export {
  DEFAULT_SPLITS,
  defaultLeanWorkers,
  type LeanAttentionOptions,
  type LeanAttentionResult,
  type LeanPartition,
  leanAttention,
  leanTiledOptions,
  WEBGPU_ASSUMED_COMPUTE_UNITS,
  WORKERS_PER_UNIT,
} from './attention.js';
export { CacheFullError } from './errors.js';
export {
  type BlockTables,
  KvCache,
  type KvCacheAttendOptions,
  type KvCacheDType,
  type KvCacheOptions,
} from './kv-cache.js';
