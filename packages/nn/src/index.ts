export {
  apply,
  type BackwardContext,
  type ForwardContext,
  isGradEnabled,
  isTensor,
  keep,
  noGrad,
  type OpDef,
  Param,
  scope,
  Var,
  type VarLike,
} from './autograd.js';
export {
  backendFor,
  deviceBackendOf,
  kernelsFor,
  registeredKernelNames,
  registerKernel,
  setDeviceBackend,
} from './dispatch.js';
export { GraphError } from './errors.js';
export { type GradcheckResult, gradcheck } from './gradcheck.js';
export { nativeKernels, registerNativeKernels } from './kernels/native/index.js';
export type {
  AdamWHyper,
  AttentionKernelOptions,
  BinaryOp,
  GlaKernelOptions,
  KernelName,
  Kernels,
  RopeSection,
  SgdHyper,
  UnaryOp,
} from './kernels/table.js';
export { tsKernels } from './kernels/ts/index.js';
export {
  copyIntoWebGpu,
  readWebGpuNow,
  registerWebGpuKernels,
  setWebGpuProfiler,
  syncWebGpu,
  type WebGpuKernelOptions,
  webGpuQueueStats,
  webgpuKernels,
} from './kernels/webgpu/index.js';
export {
  ConcatKvCache,
  type KvCache,
  MultiHeadAttention,
  type MultiHeadAttentionOptions,
} from './modules/attention.js';
export {
  GatedLinearAttention,
  type GatedLinearAttentionOptions,
  GlaState,
} from './modules/gla.js';
export {
  Dropout,
  Embedding,
  type FloatDType,
  type InitOptions,
  type Layer,
  LayerNorm,
  Linear,
  MLP,
  type MlpOptions,
  RMSNorm,
  Sequential,
} from './modules/layers.js';
export { fromSafetensors, Module, toSafetensors } from './modules/module.js';
export { TransformerBlock, type TransformerBlockOptions } from './modules/transformer.js';
export { type AttentionOptions, attention } from './ops/attention.js';
export {
  add,
  affine,
  div,
  exp,
  gelu,
  log,
  mul,
  neg,
  relu,
  sigmoid,
  silu,
  sub,
  tanh,
} from './ops/elementwise.js';
export { type GlaOptions, type GlaResult, gla, logsigmoid } from './ops/gla.js';
export { type LinearActivation, linears, matmul } from './ops/matmul.js';
export {
  addLayerNorm,
  crossEntropy,
  dropout,
  embedding,
  layerNorm,
  logSoftmax,
  rmsNorm,
  softmax,
} from './ops/nn.js';
export { argmax, max, mean, sum } from './ops/reduce.js';
export { rope, rope3d } from './ops/rope.js';
export { concat, permute, reshape, slice, transpose } from './ops/shape.js';
export { AdamW, type AdamWOptions } from './optim/adamw.js';
export { Optimizer } from './optim/optimizer.js';
export {
  clipGradNorm,
  clipGradNormOnDevice,
  type WarmupCosineOptions,
  warmupCosine,
} from './optim/schedule.js';
export { SGD, type SgdOptions } from './optim/sgd.js';
