import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  // The declarations name WebGPU's types (GPUDevice, GPUBuffer...): consumers get them from here.
  dts: { banner: '/// <reference types="@webgpu/types" />' },
  sourcemap: true,
  clean: true,
  target: 'node20',
  external: ['webgpu'],
});
