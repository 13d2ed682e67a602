// Peak RSS growth of one native backward at (1, 8, 4096, 128) causal, inputs and outputs
// allocated first; run once per thread count:
//   for t in 1 2 8 32; do ATTNKIT_NUM_THREADS=$t node benchmarks/native/backward-rss.mjs ADDON.node; done
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { attentionCalls, denseProblem } from './addon-api.mjs';

const m = createRequire(import.meta.url)(resolve(process.argv[2]));
const [B, H, N, D] = [1, 8, 4096, 128];
const size = B * H * N * D;
const mk = () => Float32Array.from({ length: size }, () => Math.random() * 2 - 1);
const [q, k, v, dO] = [mk(), mk(), mk(), mk()];
const p = denseProblem(B, H, N, D, true);
const o = new Float32Array(size),
  lse = new Float32Array(B * H * N);
const [dq, dk, dv] = [0, 1, 2].map(() => new Float32Array(size).fill(1));
const calls = attentionCalls(m);
await calls.forward(p, q, k, v, o, lse);
const before = process.resourceUsage().maxRSS;
await calls.backward(p, q, k, v, o, lse, dO, dq, dk, dv);
const after = process.resourceUsage().maxRSS;
console.log(
  JSON.stringify({
    addon: process.argv[2],
    threads: m.info().threads,
    peakRssGrowthMB: +((after - before) / 1024).toFixed(1),
  }),
);
