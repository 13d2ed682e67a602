// Decode attention with f16 K/V against f32 on the native backend (leanAttention, stream-K, B 1,
// Hq 32, D 128, Nk 32K, Nq 1, causal; best / median of 7 calls 50 ms apart). Run from this
// folder after `pnpm build`: node f16-decode-ab.mjs (the halves decoded by the engine's
// nn.decodeHalf) and ATTNKIT_JS_HALF=1 node f16-decode-ab.mjs (the op hidden: decoded in JS).

import { leanAttention } from '../../packages/lean-attention/dist/index.js';
import { loadNative } from '../../packages/native/dist/index.js';
import { Rng } from '../../packages/tensor/dist/index.js';

if (process.env.ATTNKIT_JS_HALF) {
  const e = loadNative();
  const ops = e.ops.bind(e);
  e.ops = () => {
    const o = { ...ops() };
    delete o['nn.decodeHalf'];
    return o;
  };
}
const rng = new Rng(1);
for (const [b, hkv] of [
  [1, 8],
  [1, 32],
])
  for (const dt of ['f32', 'f16']) {
    const q = rng.randn([b, 32, 1, 128]).astype(dt),
      k = rng.randn([b, hkv, 32768, 128]).astype(dt),
      v = rng.randn([b, hkv, 32768, 128]).astype(dt);
    const ts = [];
    for (let i = 0; i < 7; i++) {
      const t0 = performance.now();
      await leanAttention(q, k, v, { causal: true, backend: 'native', partition: 'streamK' });
      ts.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 50));
    }
    ts.sort((x, y) => x - y);
    console.log(`B${b} Hkv${hkv} ${dt}: best ${ts[0].toFixed(2)} ms, median ${ts[3].toFixed(2)}`);
  }
