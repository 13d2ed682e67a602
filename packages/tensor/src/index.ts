export * from './dtype.js';
export * from './errors.js';
export * from './half.js';
export * from './rng.js';
export * from './safetensors.js';
export * from './shape.js';
export * from './storage.js';
export * from './tensor.js';
