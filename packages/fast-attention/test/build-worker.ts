import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

/**
 * Test support (not part of the package): the device workers run the built worker script (a
 * worker thread cannot run the TS sources), so tests bundle it first, exactly as tsup's
 * `allreduce-worker` entry makes dist/allreduce-worker.js (the path the sources resolve it to).
 * esbuild comes from this package's devDependencies (a fresh clone has no root .bin/esbuild).
 */
export function buildWorkerForTests(): void {
  const pkg = fileURLToPath(new URL('..', import.meta.url));
  buildSync({
    absWorkingDir: pkg,
    entryPoints: ['src/allreduce/worker.ts'],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outfile: 'dist/allreduce-worker.js',
    logLevel: 'warning',
  });
}
