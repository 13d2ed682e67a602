import { attnkitVitest } from '@attnkit/vitest-config';
import { defineConfig } from 'vitest/config';

export default defineConfig(attnkitVitest({ pool: 'forks' }));
