import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts'],
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
  // Keep `node:` specifiers (tsup strips them by default): a bare 'fs' is a package name to a
  // browser bundler, `node:fs` is unmistakably Node's and only ever reached lazily, in Node.
  removeNodeProtocol: false,
});
