// Ranges (min–max) over several compare.mjs JSON files, as a Markdown table:
//   node benchmarks/native/ranges.mjs benchmarks/native/results/2026-11-22-run*.json
import { readFileSync } from 'node:fs';

const files = process.argv.slice(2);
if (files.length === 0) throw new Error('usage: node ranges.mjs RESULT.json...');
const runs = files.map((f) => JSON.parse(readFileSync(f, 'utf8')));
const range = (xs, digits = 0, suffix = '') => {
  const lo = Math.min(...xs).toFixed(digits);
  const hi = Math.max(...xs).toFixed(digits);
  return lo === hi ? `${lo}${suffix}` : `${lo}–${hi}${suffix}`;
};
const lines = [
  `Ranges over ${runs.length} runs (${files.map((f) => f.split('/').pop()).join(', ')}):`,
  '',
  '| shape, mask | engine fwd GFLOP/s | API fwd GFLOP/s | ORT GFLOP/s | engine / ORT | API / ORT | engine bwd GFLOP/s | API bwd GFLOP/s | engine bwd / fwd | engine / TS |',
  '|---|---|---|---|---|---|---|---|---|---|',
];
for (let i = 0; i < runs[0].rows.length; i++) {
  const rows = runs.map((r) => r.rows[i]);
  const { shape, causal } = rows[0];
  const col = (f, digits, suffix) => range(rows.map(f), digits, suffix);
  lines.push(
    `| (${shape.join(',')}) ${causal ? 'causal' : 'none'} | ${col((r) => r.native.fwdGflops)} | ${col((r) => r.nativeApi.fwdGflops)} | ` +
      `${col((r) => r.ort.gflops)} | ${col((r) => r.native.fwdGflops / r.ort.gflops, 2, 'x')} | ${col((r) => r.nativeApi.fwdGflops / r.ort.gflops, 2, 'x')} | ` +
      `${col((r) => r.native.bwdGflops)} | ${col((r) => r.nativeApi.bwdGflops)} | ${col((r) => r.native.bwdGflops / r.native.fwdGflops, 2)} | ` +
      `${rows.every((r) => r.ts) ? col((r) => r.native.fwdGflops / r.ts.gflops, 0, 'x') : '-'} |`,
  );
}
lines.push(`| GEMM 2048³ | ${range(runs.map((r) => r.gemm.gflops))} | | | | | | | | |`);
console.log(lines.join('\n'));
