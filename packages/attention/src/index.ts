export * from './golden.js';
export * from './metrics.js';
export * from './reference/gla.js';
export * from './reference/hstu.js';
export * from './reference/sigmoid.js';
export * from './reference/softmax.js';
export * from './spec.js';
