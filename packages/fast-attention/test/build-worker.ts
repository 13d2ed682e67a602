import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

/**
 * Test support (not part of the package): the device workers run a built worker script (a
 * worker thread cannot run the TS sources), so tests bundle it first, as tsup's
 * `allreduce-worker` entry does, into test/dist/allreduce-worker.js, where the sources look for
 * it. Not into dist/: the package's build (tsup, `clean`) may run beside its tests under turbo
 * and deleted it mid-run on CI. Test files run in parallel and each builds it: the bundle is
 * written to a file of this process and renamed into place, so no worker reads a half-written
 * script. esbuild comes from this package's devDependencies.
 */
export function buildWorkerForTests(): void {
  const pkg = fileURLToPath(new URL('..', import.meta.url));
  const out = `${pkg}test/dist/allreduce-worker.js`;
  const result = buildSync({
    absWorkingDir: pkg,
    entryPoints: ['src/allreduce/worker.ts'],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    outfile: out,
    write: false,
    logLevel: 'warning',
  });
  mkdirSync(`${pkg}test/dist`, { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  writeFileSync(tmp, result.outputFiles[0]!.contents);
  renameSync(tmp, out);
}
