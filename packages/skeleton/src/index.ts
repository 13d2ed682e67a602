/**
 * @attnkit/skeleton: the FlashAttention tiling written once per backend — a TypeScript kernel,
 * a WGSL generator and (in @attnkit/native) C++ templates — parameterised by hooks. Families
 * (flash-, sigmoid-, hstu-attention, ...) supply hooks and register kernels; they never copy
 * the tiling loop.
 */

export { type AllocHook, type AllocKind, allocF32, setAllocHook } from './cpu/alloc.js';
export { fa2Backward } from './cpu/backward.js';
export { fa1Forward } from './cpu/fa1.js';
export { fa2Forward } from './cpu/fa2.js';
export {
  type DecodePartitionKind,
  type DecodePartitionRequest,
  type DecodePiece,
  type DecodeUnit,
  piecesByUnit,
  planDecodePartition,
} from './cpu/partition.js';
export {
  checkLike,
  encodeOutput,
  sinkGradients,
  type TsTileOptions,
  tiledBackwardTs,
  tiledForwardTs,
  tsSupports,
} from './cpu/run.js';
export {
  type KeyTileRange,
  type ResolvedSchedule,
  resolveSchedule,
  splitKeyTiles,
} from './cpu/schedule.js';
export * from './family.js';
export * from './hooks.js';
export * from './hstu-rab.js';
export {
  loadNativeBackend,
  NATIVE_INSTALL_COMMAND,
  type NativeTileOptions,
  nativeAttentionProblem,
  nativeAvailable,
  nativeEngine,
  nativeSupports,
  tiledBackwardNative,
  tiledForwardNative,
} from './native.js';
export type {
  FlashTilePlan,
  FlashTileProblem,
  NativeTilePlan,
  NativeTileProblem,
} from './plan.js';
export { planFlashTiles, planNativeTiles, workspaceBytes } from './plan.js';
export {
  checkSageConfig,
  checkSageFinite,
  checkSageSettings,
  kGroupOf,
  qGroupOf,
  rint,
  SAGE_KEY_TILE,
  SAGE_Q_BLOCK,
  type SageCodecCpu,
  type SageDims,
  type SageGranularity,
  type SageGroupCounts,
  type SageKernelOptions,
  type SageQuantConfig,
  type SageSettings,
  sageGroupCounts,
  sageHeadDimOk,
} from './sage/codec.js';
export { sageForwardTs } from './sage/forward-ts.js';
export {
  quantizeSageNative,
  type SageForwardNativeOptions,
  type SageNativeIsa,
  type SageNativeOptions,
  sageForwardNative,
} from './sage/native.js';
export { quantizeSageTs, sageLseShiftTs } from './sage/quantize.js';
export { SAGE_TC_AUTO_MIN_ROWS, sageTcAutoSelect } from './sage/tc-auto.js';
export {
  disposeSageCodecGpu,
  quantizeSageWebGpu,
  SAGE_WGSL_FEATURE,
  type SageCodecGpu,
  type SageForwardWebGpuOptions,
  type SageQuantizeWebGpuOptions,
  sageCodecFromGpu,
  sageCodecToGpu,
  sageForwardWebGpu,
} from './sage/webgpu.js';
export {
  type BindingChunk,
  type ChunkProblem,
  type HeadSlice,
  planBindingChunks,
} from './webgpu/chunks.js';
export type { WebGpuEncodeTarget, WebGpuTileOptions } from './webgpu/host.js';
export {
  encodeBackwardWebGpu,
  encodeForwardWebGpu,
  tiledBackwardWebGpu,
  tiledForwardWebGpu,
  webGpuSupports,
} from './webgpu/host.js';
export type {
  WebGpuFlashKernel,
  WebGpuFlashPlan,
  WebGpuPlanInput,
  WebGpuTileConfig,
} from './webgpu/plan.js';
export { planWebGpuFlash } from './webgpu/plan.js';
export {
  SPLIT_F16_WORKGROUPS,
  type SplitF16Layout,
  splitF16Layout,
  splitF16Shader,
} from './webgpu/split-f16.js';
export {
  TC_BACKWARD_TILES,
  type TcBackwardConfig,
  type TcBackwardTile,
  tcBackwardConfigFor,
  tcBackwardMatrices,
  tcBackwardStorageBuffers,
  tcBackwardWorkgroupBytes,
  tcDkdvShader,
  tcDqShader,
} from './webgpu/tc-backward.js';
export {
  matrixOps,
  TC_SAGE_FIELDS,
  TC_SPLIT_FIELDS,
  TC_SUBGROUP_SIZE,
  type TcForwardConfig,
  type TcSageConfig,
  tcForwardShader,
  tcForwardWorkgroupBytes,
} from './webgpu/tc-forward.js';
export {
  describeTcPlan,
  planTensorCoreTiles,
  TC_MAX_MATRICES_PER_SIDE,
  TC_REGISTER_BUDGET_FLOATS,
  type TcPass,
  type TcPlanInput,
  type TcTilePlan,
  tcQDirectFits,
} from './webgpu/tc-plan.js';
