import { defineConfig } from 'tsup';

export default defineConfig({
  entry: ['src/index.ts', 'src/main.ts'],
  format: ['esm'],
  dts: { entry: 'src/index.ts' },
  sourcemap: true,
  clean: true,
  target: 'node20',
  // Keep `node:` specifiers (tsup strips them by default), as the library packages do: the
  // command is Node-only, but a bare 'fs' could be mistaken for a package of that name.
  removeNodeProtocol: false,
});
