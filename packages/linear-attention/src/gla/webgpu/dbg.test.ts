import { accuracy } from '@attnkit/attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { test } from 'vitest';
import { chunkGla, glaReference } from '../../index.js';
import { makeProblem } from './testing.js';
const ctx = await webGpuTestContext();
test('dbg', async () => {
  for (const [T, K, V, C] of [[200, 8, 8, 128], [128, 8, 8, 128], [256, 64, 64, 128], [200, 8, 8, 64], [300, 130, 70, 64]]) {
    const pr = makeProblem(new Rng(1), { B: 1, T, H: 1, K, V });
    const ref = glaReference(pr.q, pr.k, pr.v, pr.gk, { outputFinalState: true });
    const up = (t: Tensor) => toWebGpu(t, ctx!);
    const f = await chunkGla(up(pr.q), up(pr.k), up(pr.v), up(pr.gk), { outputFinalState: true, backend: 'webgpu', chunkSize: C });
    const o = accuracy(await f.o.toCpu(), ref.o);
    const ht = accuracy(await f.finalState!.toCpu(), ref.finalState!);
    // per-row error of o
    const got = (await f.o.toCpu()).toFloat32Array();
    const want = ref.o.toFloat32Array();
    const bad: number[] = [];
    for (let t = 0; t < T; t++) { let e = 0; for (let x = 0; x < V; x++) e = Math.max(e, Math.abs(got[t * V + x]! - want[t * V + x]!)); if (e > 1e-3) bad.push(t); }
    console.log(T, K, V, C, 'o', o.relL2.toExponential(2), 'ht', ht.relL2.toExponential(2), 'bad rows', bad.length, bad.slice(0, 40).join(','));
  }
}, 100000);
