import { attnkitVitest } from '@attnkit/vitest-config';
import { defineConfig } from 'vitest/config';

// Forks: the native addon (loaded by the exact kernels) is a native module.
export default defineConfig(attnkitVitest({ pool: 'forks' }));
