// Split-K (numSplits) on decode shapes through the public API, native and ts backends:
// Nq = 1 query per sequence against a long key sequence, causal, f32. Median of REPS calls
// after a warm-up, splits interleaved per repetition. Prints a table, writes JSON.
//   pnpm build && node benchmarks/splitk-decode.mjs [reps] > benchmarks/results/<date>-splitk-decode.json
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const reps = Number(process.argv[2] ?? 9);
const load = (pkg) => import(pathToFileURL(resolve(`packages/${pkg}/dist/index.js`)).href);
const { flashAttention } = await load('flash-attention');
const { Rng } = await load('tensor');

const SHAPES = [
  { backend: 'native', B: 1, hq: 8, hkv: 2, nk: 32768, d: 128 },
  { backend: 'native', B: 1, hq: 1, hkv: 1, nk: 32768, d: 128 },
  { backend: 'ts', B: 1, hq: 1, hkv: 1, nk: 16384, d: 64 },
];
const SPLITS = [1, 2, 4, 8];
const rows = [];
for (const s of SHAPES) {
  const rng = new Rng(1);
  const q = rng.randn([s.B, s.hq, 1, s.d]);
  const k = rng.randn([s.B, s.hkv, s.nk, s.d]);
  const v = rng.randn([s.B, s.hkv, s.nk, s.d]);
  const opts = (n) => ({ causal: true, backend: s.backend, numSplits: n });
  const ms = Object.fromEntries(SPLITS.map((n) => [n, []]));
  for (const n of SPLITS) await flashAttention(q, k, v, opts(n));
  for (let r = 0; r < (s.backend === 'ts' ? Math.min(reps, 5) : reps); r++) {
    for (const n of SPLITS) {
      const t0 = performance.now();
      await flashAttention(q, k, v, opts(n));
      ms[n].push(performance.now() - t0);
    }
  }
  const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  for (const n of SPLITS) {
    const row = { ...s, nq: 1, splits: n, medianMs: med(ms[n]), minMs: Math.min(...ms[n]) };
    rows.push(row);
    console.error(
      `${s.backend.padEnd(6)} B${s.B} Hq${s.hq} Hkv${s.hkv} Nk${s.nk} D${s.d} splits ${String(n).padStart(2)}: median ${row.medianMs.toFixed(2)} ms, min ${row.minMs.toFixed(2)} ms`,
    );
  }
}
console.log(JSON.stringify({ date: new Date().toISOString(), reps, rows }, null, 2));
