import { accuracy, softmaxAttentionReferenceBackward } from '@attnkit/attention';
import { nativeAvailable } from '@attnkit/flash-attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { describe, expect, it } from 'vitest';
import { hyperAttention, hyperAttentionBackward } from './index.js';

const BACKENDS = (await nativeAvailable()) ? (['ts', 'native'] as const) : (['ts'] as const);
const SEED = Math.floor(Math.random() * 2 ** 31);

function inputs(
  B: number,
  Hq: number,
  Hkv: number,
  Nq: number,
  Nk: number,
  D: number,
  seed: number,
) {
  const rng = new Rng(seed);
  return {
    q: rng.randn([B, Hq, Nq, D]),
    k: rng.randn([B, Hkv, Nk, D]),
    v: rng.randn([B, Hkv, Nk, D]),
    dO: rng.randn([B, Hq, Nq, D]),
  };
}

describe.each(BACKENDS)('hyperAttentionBackward on %s', (backend) => {
  it('equals the exact gradients in the exact limits (one block of every key; causal below minSeqLen)', async () => {
    for (const [causal, opts] of [
      [false, { blockSize: 64, minSeqLen: 1 }],
      [true, { minSeqLen: 64 }],
      [true, { minSeqLen: 4, blockSize: 64, sampleSize: 5 }],
    ] as const) {
      const { q, k, v, dO } = inputs(2, 4, 2, 37, 53, 8, SEED);
      const o = { causal, backend, returnLse: true, ...opts };
      const f = await hyperAttention(q, k, v, o);
      const g = await hyperAttentionBackward(q, k, v, f.o, f.lse!, dO, o);
      const ref = softmaxAttentionReferenceBackward(q, k, v, dO, { causal });
      for (const name of ['dq', 'dk', 'dv'] as const) {
        const acc = accuracy(g[name], ref[name]);
        expect(acc.nonFinite).toBe(0);
        expect(acc.relL2, `${name} causal ${causal} (seed ${SEED})`).toBeLessThan(1e-5);
      }
    }
  });

  it("is the estimator's gradient: Euler's identity in v, dk summing to 0, finite differences in q", async () => {
    const [B, H, N, D] = [1, 2, 96, 8];
    const { q, k, v, dO } = inputs(B, H, 1, N, N, D, 123);
    const o = {
      causal: true,
      blockSize: 8,
      sampleSize: 6,
      minSeqLen: 16,
      seed: 9,
      backend,
      returnLse: true,
    };
    const f = await hyperAttention(q, k, v, o);
    const g = await hyperAttentionBackward(q, k, v, f.o, f.lse!, dO, o);
    const loss = (x: Tensor) => {
      const X = x.toFloat64Array();
      const G = dO.toFloat64Array();
      return X.reduce((a, xi, i) => a + xi * G[i]!, 0);
    };
    // O is linear and homogeneous in V: sum(v . dv) = sum(O . dO).
    const V = v.toFloat64Array();
    const dv = g.dv.toFloat64Array();
    const euler = V.reduce((a, x, i) => a + x * dv[i]!, 0);
    expect(Math.abs(euler - loss(f.o))).toBeLessThan(1e-4 * Math.abs(loss(f.o)) + 1e-5);
    // Shifting every key by one vector shifts each row's scores by a constant: sum_j dk_j = 0.
    const dk = g.dk.toFloat64Array();
    const absSum = dk.reduce((a, x) => a + Math.abs(x), 0);
    for (let c = 0; c < D; c++) {
      let sum = 0;
      for (let j = 0; j < N; j++) sum += dk[j * D + c]!;
      expect(Math.abs(sum)).toBeLessThan(1e-5 * absSum);
    }
    // Central differences in a few q entries (the buckets are unchanged by these steps).
    const Q = q.toFloat32Array();
    const dq = g.dq.toFloat64Array();
    for (const at of [5, 8 * 50 + 3, 8 * 90 + 7, N * D + 8 * 70 + 1]) {
      const eps = 1e-2;
      const shifted = async (delta: number) => {
        const Qs = Float32Array.from(Q);
        Qs[at]! += delta;
        return loss((await hyperAttention(Tensor.from(Qs, q.shape), k, v, o)).o);
      };
      const fd = ((await shifted(eps)) - (await shifted(-eps))) / (2 * eps);
      expect(Math.abs(fd - dq[at]!), `q[${at}]: fd ${fd} vs ${dq[at]}`).toBeLessThan(
        2e-3 + 1e-2 * Math.abs(fd),
      );
    }
  });

  it('rejects o, lse, dO of the wrong shapes', async () => {
    const { q, k, v, dO } = inputs(1, 2, 1, 16, 16, 8, 1);
    const f = await hyperAttention(q, k, v, { returnLse: true, backend });
    await expect(
      hyperAttentionBackward(q, k, v, f.o, Tensor.zeros([1, 2, 15]), dO, { backend }),
    ).rejects.toThrow(expect.objectContaining({ name: 'ShapeError', argument: 'lse' }));
    await expect(
      hyperAttentionBackward(q, k, v, f.o, f.lse!, Tensor.zeros([1, 2, 16, 4]), { backend }),
    ).rejects.toThrow(expect.objectContaining({ name: 'ShapeError', argument: 'dO' }));
  });
});
