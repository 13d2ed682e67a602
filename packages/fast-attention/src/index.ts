/**
 * @attnkit/fast-attention: FastAttention (Lin et al.) on attnkit's skeleton — two-level tiling
 * planned from a device's limits, tiling-mask counters, and the tiling-AllReduce of heads split
 * over device workers (Node). Importing it registers the 'fast'
 * family (webgpu and ts forward / backward) in the @attnkit/attention registry.
 */
export { DeviceWorkerError } from './allreduce/errors.js';
export {
  type AllReduceBackend,
  AllReduceGroup,
  type AllReduceGroupOptions,
  type AllReduceTimings,
  type TiledAllReduceOptions,
  type TiledAllReduceResult,
  tiledAllReduceAttention,
} from './allreduce/group.js';
export {
  type AllReducePlan,
  type AllReduceProblem,
  type ColumnChunk,
  type HeadShard,
  planColumnChunks,
  planHeadShards,
  planRowTiles,
  planTiledAllReduce,
  type RowTile,
  tileKeyLength,
} from './allreduce/plan.js';
export {
  deviceClassOf,
  type FastAttentionGrads,
  type FastAttentionOptions,
  type FastAttentionResult,
  type FastBackend,
  fastAttention,
  fastAttentionBackward,
} from './attention.js';
export {
  CPU_L2_1M,
  CPU_L2_256K,
  CPU_L2_512K_NEON,
  type CpuDeviceClass,
  DEVICE_CLASSES,
  type DeviceClass,
  resolveDevice,
  WEBGPU_DEFAULT,
  WEBGPU_DESKTOP,
  WEBGPU_H200,
  type WebGpuDeviceClass,
} from './devices.js';
export {
  type FastProblem,
  type InnerTile,
  invocationRegisters,
  type OuterTile,
  planTwoLevel,
  simdRegisterBlock,
  type TwoLevelPlan,
} from './planner.js';
export {
  GpuBudgetError,
  type KeyChunk,
  planStreaming,
  type StreamBuffers,
  type StreamDType,
  type StreamLimits,
  type StreamPlan,
  type StreamProblem,
  streamSchedule,
} from './streaming/plan.js';
export {
  type StreamingAttentionOptions,
  type StreamingAttentionResult,
  type StreamingStats,
  type StreamProgress,
  streamingAttention,
} from './streaming/stream.js';
export {
  resolveBand,
  TILE_FULL,
  TILE_PARTIAL,
  TILE_SKIPPED,
  type TileCountOptions,
  type TileCountProblem,
  type TileCounts,
  type TileShape,
  tileClasses,
  tileCounts,
} from './tile-counts.js';
