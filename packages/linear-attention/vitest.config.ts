import { attnkitVitest } from '@attnkit/vitest-config';
import { defineConfig } from 'vitest/config';

// The conformance runner loads Dawn for a webgpu registration (a native addon: child processes,
// not worker threads).
export default defineConfig(attnkitVitest({ pool: 'forks' }));
