export { sageAttention } from './attention.js';
export { type CalibrateOptions, calibrate } from './calibrate.js';
export type {
  SageAttentionOptions,
  SageBackend,
  SageBits,
  SageCalibration,
} from './options.js';
