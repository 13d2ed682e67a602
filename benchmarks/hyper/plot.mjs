// HyperAttention's error against its speed-up over exact FlashAttention-2 (issue 14 item 4), one
// point per measured hyper row of the results JSON that benchmarks/hyper/cpu.mjs (or the GPU
// bench) wrote: x = exact FA2 time / hyper time in the same run, y = relative Frobenius error of
// o against exact attention; colour = N, shape = input (random / planted heavy keys), one panel
// per mask. Rendered with Vega-Lite to a standalone SVG (no browser, no canvas).
//
//   node benchmarks/hyper/plot.mjs [results.json ...] [--out file.svg]
//
// Default input: results/2026-12-02-cpu.json; default output: the first input with .svg.
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, View } from 'vega';
import { compile } from 'vega-lite';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outAt = args.indexOf('--out');
const out = outAt >= 0 ? args[outAt + 1] : undefined;
const inputs = outAt < 0 ? args : args.filter((_a, i) => i !== outAt && i !== outAt + 1);
if (inputs.length === 0) inputs.push(join(here, 'results/2026-12-02-cpu.json'));

const points = [];
for (const file of inputs) {
  const run = JSON.parse(readFileSync(file, 'utf8'));
  for (const r of run.rows ?? []) {
    if (r.contender !== 'hyper') continue;
    // relErr 0: the exact path (N <= minSeqLen), no approximation to plot on a log axis.
    if (!(r.relErr > 0) || !(r.speedup > 0)) continue;
    points.push({
      N: r.N,
      input: r.input,
      mask: r.causal ? 'causal' : 'full',
      speedup: r.speedup,
      relErr: r.relErr,
      config: `b${r.blockSize} m${r.sampleSize}`,
      backend: run.backend ?? 'cpu',
    });
  }
}
if (points.length === 0) {
  console.error(`plot: no hyper rows with an error and a speed-up in ${inputs.join(', ')}`);
  process.exit(1);
}

const spec = {
  $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
  title: {
    text: 'HyperAttention: error vs speed-up over exact FA2 (same backend, same run)',
    subtitle: inputs.map((f) => f.replace(/^.*\/benchmarks\//, 'benchmarks/')).join(', '),
  },
  data: { values: points },
  facet: { column: { field: 'mask', type: 'nominal', title: null } },
  spec: {
    width: 320,
    height: 260,
    layer: [
      {
        mark: { type: 'rule', strokeDash: [4, 4], color: '#888' },
        encoding: { x: { datum: 1 } },
      },
      {
        mark: { type: 'rule', strokeDash: [2, 2], color: '#c33' },
        encoding: { y: { datum: 0.1 } },
      },
      {
        mark: { type: 'point', filled: true, size: 70, opacity: 0.85 },
        encoding: {
          x: {
            field: 'speedup',
            type: 'quantitative',
            scale: { type: 'log' },
            title: 'speed-up (exact FA2 ms / hyper ms)',
          },
          y: {
            field: 'relErr',
            type: 'quantitative',
            scale: { type: 'log' },
            title: '‖O − O_exact‖_F / ‖O_exact‖_F',
          },
          color: { field: 'N', type: 'ordinal', scale: { scheme: 'viridis' } },
          shape: { field: 'input', type: 'nominal' },
          tooltip: [{ field: 'config' }, { field: 'N' }],
        },
      },
    ],
  },
};

const view = new View(parse(compile(spec).spec), { renderer: 'none' });
const svg = await view.toSVG();
const target = out ?? inputs[0].replace(/\.json$/, '.svg');
writeFileSync(target, svg);
console.log(`plot: ${points.length} points -> ${target}`);
