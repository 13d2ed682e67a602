// A/B of the native tile hints: the engine defaults vs planNativeTiles (io-complexity I/O model),
// public API, best of 5 interleaved rounds. Run after `pnpm build`: node benchmarks/native-tile-hints-ab.mjs

import {
  flashAttention,
  flashAttentionBackward,
  planNativeTiles,
} from '../packages/flash-attention/dist/index.js';
import { Rng } from '../packages/tensor/dist/index.js';

const shapes = [
  [1, 8, 2048, 64],
  [1, 16, 4096, 128],
];
const out = [];
for (const [B, H, N, D] of shapes)
  for (const causal of [false, true]) {
    const rng = new Rng(1);
    const q = rng.randn([B, H, N, D]),
      k = rng.randn([B, H, N, D]),
      v = rng.randn([B, H, N, D]),
      dO = rng.randn([B, H, N, D]);
    const plan = planNativeTiles({ nq: N, nk: N, d: D, dv: D });
    const variants = { engineDefault: {}, ioPlan: { blockQ: plan.blockQ, blockK: plan.blockK } };
    const best = {};
    const fwd = await flashAttention(q, k, v, { backend: 'native', causal });
    for (let rep = 0; rep < 5; rep++)
      for (const [name, t] of Object.entries(variants)) {
        const o = { backend: 'native', causal, ...t };
        await new Promise((r) => setTimeout(r, 30));
        let t0 = performance.now();
        await flashAttention(q, k, v, o);
        const f = performance.now() - t0;
        await new Promise((r) => setTimeout(r, 30));
        t0 = performance.now();
        await flashAttentionBackward(q, k, v, fwd.o, fwd.lse, dO, o);
        const b = performance.now() - t0;
        best[name] ??= { fwd: Infinity, bwd: Infinity };
        best[name].fwd = Math.min(best[name].fwd, f);
        best[name].bwd = Math.min(best[name].bwd, b);
      }
    const row = { shape: [B, H, N, D], causal, plan, ...best };
    out.push(row);
    console.log(JSON.stringify(row));
  }
