export { CacheFullError } from './errors.js';
export { type BlockTables, KvCache, type KvCacheDType, type KvCacheOptions } from './kv-cache.js';
