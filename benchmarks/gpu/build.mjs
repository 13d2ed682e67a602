// Bundles the bench-*.ts entry points below (and the CLI), each into one ES module for node: workspace packages inlined from their
// sources, only `webgpu` (Dawn's native addon) left external.
import { mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const packages = join(here, '../../packages');
const alias = {};
for (const name of readdirSync(packages))
  alias[`@attnkit/${name}`] = join(packages, name, 'src/index.ts');

// Every bundle: one ES module for node 20 beside the others, workspace packages inlined from
// their sources, only Dawn's addon left external.
const bundleOptions = {
  outdir: join(here, 'dist'),
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  external: ['webgpu'],
  alias,
};

const BENCHES = [
  'webgpu',
  'hstu',
  'mfalcon',
  'tc',
  'lean',
  'sage',
  'gla',
  'hyper',
  'stream',
  'nn-block',
  'tc-micro',
  'tc-numerics',
  'tc-split',
  'gpt',
  'matmul',
];
await build({
  entryPoints: [
    ...BENCHES.map((b) => join(here, `bench-${b}.ts`)),
    // The CLI too, for `attnkit info` on the device (native is not there: it says so).
    { in: join(here, '../../apps/cli/src/main.ts'), out: 'attnkit' },
  ],
  ...bundleOptions,
  logLevel: 'warning',
});
// attnkit-gpt (apps/gpt) for the H200's webgpu training run: its CommonJS dependencies
// (cli-progress, vega's) call require, which an ES module has only through createRequire.
await build({
  entryPoints: [{ in: join(here, '../../apps/gpt/src/main.ts'), out: 'attnkit-gpt' }],
  ...bundleOptions,
  nodePaths: [join(here, '../../apps/gpt/node_modules')],
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
// benchmarks/fast/webgpu-limits.mjs (FastAttention under WebGPU's default limits vs the tuned
// kernels) loads each package's dist by path to run in the repo; bundled, those loads become
// imports of the workspace sources.
await build({
  entryPoints: [{ in: join(here, '../fast/webgpu-limits.mjs'), out: 'bench-limits' }],
  ...bundleOptions,
  plugins: [
    {
      name: 'dist-imports',
      setup(b) {
        b.onLoad({ filter: /webgpu-limits\.mjs$/ }, async (args) => ({
          contents: readFileSync(args.path, 'utf8').replace(
            /await dist\('([a-z-]+)'\)/g,
            "await import('@attnkit/$1')",
          ),
          loader: 'js',
        }));
      },
    },
  ],
  logLevel: 'warning',
});
// The skeleton imports @attnkit/native optionally (a computed specifier the bundle keeps): a
// link beside the bundles lets them find this checkout's addon, so `--backend native` runs here.
const link = join(here, 'dist/node_modules/@attnkit/native');
rmSync(link, { force: true, recursive: true });
mkdirSync(dirname(link), { recursive: true });
symlinkSync(join(packages, 'native'), link, 'dir');
console.log(
  `built benchmarks/gpu/dist/bench-{${[...BENCHES, 'limits'].join(',')}}.mjs, attnkit.mjs, attnkit-gpt.mjs`,
);
