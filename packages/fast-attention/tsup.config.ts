import { defineConfig } from 'tsup';

export default defineConfig({
  // The tiling-AllReduce's device worker is a script of its own (new Worker(url) beside
  // dist/index.js), not a module the index imports.
  entry: { index: 'src/index.ts', 'allreduce-worker': 'src/allreduce/worker.ts' },
  // One file per entry: shared chunks would carry the kernel registrations out of
  // dist/index.js, the one file package.json's sideEffects keeps from tree-shaking.
  splitting: false,
  // An optional dependency (tsup bundles those): the worker imports the installed package, whose
  // loader finds the addon beside itself.
  external: ['@attnkit/native'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // Keep `node:` specifiers (tsup strips them by default): a bare 'fs' is a package name to a
  // browser bundler, `node:fs` is unmistakably Node's and only ever reached lazily, in Node.
  removeNodeProtocol: false,
});
