/// <reference types="@webgpu/types" />
export * from './adapter.js';
export * from './context.js';
export * from './errors.js';
export * from './pipelines.js';
export * from './pool.js';
export * from './profiler.js';
export * from './storage.js';
