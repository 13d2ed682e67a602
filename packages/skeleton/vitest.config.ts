import { attnkitVitest } from '@attnkit/vitest-config';
import { defineConfig } from 'vitest/config';

// The WebGPU tests load Dawn (a native addon: child processes, not worker threads); Mesa's EGL
// needs the surfaceless platform on machines without a display server.
// Two test files at a time: vitest's default (CPUs - 1) is one on CI's two cores, and with Mesa's
// shader cache empty this package's 44 files then ran one after another for the whole 40-minute
// run (2026-12-05; the other packages were done after 24, a core idle from there on).
export default defineConfig(
  attnkitVitest({ pool: 'forks', maxWorkers: 2, env: { EGL_PLATFORM: 'surfaceless' } }),
);
