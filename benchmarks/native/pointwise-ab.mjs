// Interleaved A/B of the native pointwise-normalize kernels (FlashSigmoid and HSTU's silu)
// between two builds of the addon, in one process on the same inputs: forward and backward,
// best of REPS rounds each (the order alternates every round). One JSON line per row.
//   node benchmarks/native/pointwise-ab.mjs OLD.node NEW.node [REPS]
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { denseProblem } from './addon-api.mjs';

const req = createRequire(import.meta.url);
const addons = [req(resolve(process.argv[2])), req(resolve(process.argv[3]))];
const reps = Number(process.argv[4] ?? 7);
const [B, H, N, D] = [1, 8, 2048, 64];
const size = B * H * N * D;
const mk = () => Float32Array.from({ length: size }, () => Math.random() * 2 - 1);
const [q, k, v, dO] = [mk(), mk(), mk(), mk()];
for (const normalize of [
  { kind: 'silu', factor: 1 / N },
  { kind: 'sigmoid', bias: Float32Array.of(-Math.log(N)) },
]) {
  for (const causal of [false, true]) {
    const p = { ...denseProblem(B, H, N, D, causal), normalize };
    const outs = [0, 1].map(() => [0, 1, 2, 3].map(() => new Float32Array(size)));
    const calls = addons.map((a, i) => ({
      forward: () => a.run('attention.forward', p, { q, k, v }, { o: outs[i][0] }),
      backward: () =>
        a.run(
          'attention.backward',
          p,
          { q, k, v, dO },
          { dq: outs[i][1], dk: outs[i][2], dv: outs[i][3] },
        ),
    }));
    for (const pass of ['forward', 'backward']) {
      const best = [Infinity, Infinity];
      for (const c of calls) await c[pass]();
      for (let r = 0; r < reps; r++) {
        for (const i of r % 2 ? [1, 0] : [0, 1]) {
          await setTimeout(20);
          const t0 = process.hrtime.bigint();
          await calls[i][pass]();
          best[i] = Math.min(best[i], Number(process.hrtime.bigint() - t0) / 1e6);
        }
      }
      const j = pass === 'forward' ? [0] : [1, 2, 3];
      let maxDiff = 0;
      for (const t of j)
        for (let x = 0; x < size; x++)
          maxDiff = Math.max(maxDiff, Math.abs(outs[0][t][x] - outs[1][t][x]));
      console.log(
        JSON.stringify({
          normalize: normalize.kind,
          causal,
          pass,
          shape: [B, H, N, D],
          beforeMs: best[0],
          afterMs: best[1],
          change: best[1] / best[0] - 1,
          maxAbsDiff: maxDiff,
        }),
      );
    }
  }
}
