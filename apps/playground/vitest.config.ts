import { attnkitVitest } from '@attnkit/vitest-config';
import { defineConfig } from 'vitest/config';

// The e2e test drives headless Chromium against the built app (dist/): one file, in a child
// process, with room for SwiftShader's WebGPU (a CPU Vulkan) to compile the kernels.
export default defineConfig(
  attnkitVitest({
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
  }),
);
