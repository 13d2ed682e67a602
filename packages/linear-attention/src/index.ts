/**
 * @attnkit/linear-attention: gated linear attention (GLA; Yang et al., "Gated Linear Attention
 * Transformers with Hardware-Efficient Training", 2024) with fla's public functions and argument
 * names: chunkGla (chunkwise, two-level) and fusedRecurrentGla (recurrent), forward and backward,
 * registered in the family x backend registry as family 'gla' (importing this package registers
 * the kernels).
 */

export {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
  type GlaBackwardOptions,
  type GlaGrads,
  type GlaResult,
} from './gla/api.js';
export {
  type ChunkGlaOptions,
  checkGateValues,
  type FusedRecurrentGlaOptions,
  type GlaForm,
  type GlaOptions,
  type GlaProblem,
  resolveGla,
} from './gla/options.js';
export {
  GLA_CHUNK_SIZE,
  type GlaCountProblem,
  type GlaSequence,
  glaBytes,
  glaChunks,
  glaFlops,
  glaSequences,
  glaSubChunkSize,
} from './gla/plan.js';
export { type GlaReferenceOptions, glaReference, glaReferenceBackward } from './gla/reference.js';
export {
  GLA_BACKWARD_OUTPUTS,
  GLA_FAMILY,
  GLA_FORWARD_OUTPUTS,
  glaFormOf,
  glaProblem,
} from './gla/register.js';
// The synchronous ts kernels (resolveGla's problem in, tensors out), for synchronous callers.
export { glaBackwardTs, glaForwardTs } from './gla/ts-backend.js';

import './gla/webgpu/register.js'; // the 'gla' kernels on WebGPU (backend 'webgpu')

export {
  glaBackwardNativeSync,
  glaForwardNativeSync,
  glaNativeAvailable,
  glaNativeReady,
} from './gla/native.js'; // the 'gla' kernels (chunk and recurrent) on @attnkit/native (backend 'native'); an export, not a bare import, so the bundle keeps the registrations (sideEffects lists only index)
