import { attnkitVitest } from '@attnkit/vitest-config';
import { defineConfig } from 'vitest/config';

// The WebGPU tests load Dawn (a native addon: child processes, not worker threads); Mesa's EGL
// needs the surfaceless platform on machines without a display server.
export default defineConfig(attnkitVitest({ pool: 'forks', env: { EGL_PLATFORM: 'surfaceless' } }));
