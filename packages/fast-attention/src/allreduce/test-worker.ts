import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/**
 * Test support (not exported by the package): the device workers run the built worker script
 * (a worker thread cannot run the TS sources), so tests bundle it first, exactly as tsup's
 * `allreduce-worker` entry makes dist/allreduce-worker.js (the path the sources resolve it to).
 */
export function buildWorkerForTests(): void {
  const pkg = fileURLToPath(new URL('../..', import.meta.url));
  execFileSync(
    fileURLToPath(new URL('../../../../node_modules/.bin/esbuild', import.meta.url)),
    [
      'src/allreduce/worker.ts',
      '--bundle',
      '--platform=node',
      '--format=esm',
      '--target=node20',
      '--packages=external',
      '--outfile=dist/allreduce-worker.js',
      '--log-level=warning',
    ],
    { cwd: pkg },
  );
}
