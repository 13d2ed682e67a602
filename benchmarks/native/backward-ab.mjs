// Interleaved A/B of the native backward between two builds of the addon (e.g. a copy of
// packages/native/build/Release/attnkit_native.node saved before a change, and the current
// one), in one process on the same inputs; one JSON line per shape (best of REPS rounds each):
//   node benchmarks/native/backward-ab.mjs OLD.node NEW.node [REPS]
import { createRequire } from 'node:module';
import { resolve } from 'node:path';
import { setTimeout } from 'node:timers/promises';
import { attentionCalls, denseProblem } from './addon-api.mjs';

const req = createRequire(import.meta.url);
const A = req(resolve(process.argv[2]));
const Bn = req(resolve(process.argv[3]));
const reps = Number(process.argv[4] ?? 7);
const calls = [attentionCalls(A), attentionCalls(Bn)];
const rows = [];
for (const [B, H, N, D] of [
  [1, 8, 2048, 64],
  [1, 16, 4096, 128],
]) {
  for (const causal of [false, true]) {
    const size = B * H * N * D;
    const mk = () => Float32Array.from({ length: size }, () => Math.random() * 2 - 1);
    const [q, k, v, dO] = [mk(), mk(), mk(), mk()];
    const p = denseProblem(B, H, N, D, causal);
    const o = new Float32Array(size),
      lse = new Float32Array(B * H * N);
    await calls[0].forward(p, q, k, v, o, lse);
    const outs = [0, 1].map(() => [0, 1, 2].map(() => new Float32Array(size)));
    const fns = calls.map((c, i) => () => c.backward(p, q, k, v, o, lse, dO, ...outs[i]));
    const best = [Infinity, Infinity];
    for (const f of fns) await f();
    for (let r = 0; r < reps; r++)
      for (let i = 0; i < 2; i++) {
        await setTimeout(50);
        const t0 = process.hrtime.bigint();
        await fns[i]();
        best[i] = Math.min(best[i], Number(process.hrtime.bigint() - t0) / 1e9);
      }
    let maxDiff = 0;
    for (let j = 0; j < 3; j++)
      for (let x = 0; x < size; x++)
        maxDiff = Math.max(maxDiff, Math.abs(outs[0][j][x] - outs[1][j][x]));
    const flops = (2.5 * 4 * B * H * N * N * D) / (causal ? 2 : 1);
    const row = {
      shape: [B, H, N, D],
      causal,
      beforeMs: best[0] * 1e3,
      afterMs: best[1] * 1e3,
      beforeGflops: flops / best[0] / 1e9,
      afterGflops: flops / best[1] / 1e9,
      change: best[1] / best[0] - 1,
      maxAbsDiff: maxDiff,
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
}
