// Bundles bench-webgpu.ts and bench-hstu.ts, each into one ES module for node: workspace packages inlined from their
// sources, only `webgpu` (Dawn's native addon) left external.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const packages = join(here, '../../packages');
const alias = {};
for (const name of readdirSync(packages))
  alias[`@attnkit/${name}`] = join(packages, name, 'src/index.ts');

await build({
  entryPoints: [
    join(here, 'bench-webgpu.ts'),
    join(here, 'bench-hstu.ts'),
    // The CLI too, for `attnkit info` on the device (native is not there: it says so).
    { in: join(here, '../../apps/cli/src/main.ts'), out: 'attnkit' },
  ],
  outdir: join(here, 'dist'),
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['webgpu'],
  alias,
  logLevel: 'warning',
});
console.log('built benchmarks/gpu/dist/bench-webgpu.mjs, bench-hstu.mjs, attnkit.mjs');
