import {
  accuracy,
  registeredKernels,
  softmaxAttentionReference,
  toleranceFor,
} from '@attnkit/attention';
import { nativeAvailable } from '@attnkit/flash-attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { describe, expect, it } from 'vitest';
import { setPackedCallBytes } from './attention.js';
import {
  AngularLsh,
  diagonalBlocks,
  hyperAttention,
  hyperAttentionBackward,
  sortByBucket,
} from './index.js';

const BACKENDS = (await nativeAvailable()) ? (['ts', 'native'] as const) : (['ts'] as const);
// Fresh inputs each run; the seed is in every failure message.
const SEED = Math.floor(Math.random() * 2 ** 31);

// [B, Hq, Hkv, Nq, Nk, D, Dv]: GQA, Nq != Nk both ways, odd lengths, Dv != D.
const SHAPES = [
  [1, 2, 2, 64, 64, 16, 16],
  [2, 4, 2, 37, 53, 8, 12],
  [1, 3, 1, 129, 100, 32, 32],
  [1, 2, 1, 1, 45, 16, 8],
] as const;

function inputs(shape: (typeof SHAPES)[number], seed: number, dtype: 'f32' | 'f16' = 'f32') {
  const [B, Hq, Hkv, Nq, Nk, D, Dv] = shape;
  const rng = new Rng(seed);
  return {
    q: rng.randn([B, Hq, Nq, D], dtype),
    k: rng.randn([B, Hkv, Nk, D], dtype),
    v: rng.randn([B, Hkv, Nk, Dv], dtype),
  };
}

function expectClose(actual: Tensor, ref: Tensor, what: string, tol = 1e-5): void {
  const acc = accuracy(actual, ref);
  expect(acc.nonFinite, `${what}: non-finite (seed ${SEED})`).toBe(0);
  expect(acc.relL2, `${what}: relL2 (seed ${SEED})`).toBeLessThanOrEqual(tol);
}

describe.each(BACKENDS)('hyperAttention on %s', (backend) => {
  it('equals exact attention when one diagonal block holds every key (blockSize >= Nk)', async () => {
    for (const [n, shape] of SHAPES.entries()) {
      const { q, k, v } = inputs(shape, SEED + n);
      const ref = softmaxAttentionReference(q, k, v);
      // minSeqLen 1: the LSH path runs (sorting, one block); sampleSize stays the default.
      const got = await hyperAttention(q, k, v, {
        blockSize: shape[4],
        minSeqLen: 1,
        returnLse: true,
        backend,
      });
      expect(got.o.shape).toEqual(ref.o.shape);
      expectClose(got.o, ref.o, `o ${shape}`, toleranceFor({ maxSeqLen: shape[4] }));
      expectClose(got.lse!, ref.lse, `lse ${shape}`);
    }
  });

  it('equals exact causal attention below minSeqLen, and through the recursion with full blocks', async () => {
    for (const [n, shape] of SHAPES.entries()) {
      const { q, k, v } = inputs(shape, SEED + 10 + n);
      const ref = softmaxAttentionReference(q, k, v, { causal: true });
      const n0 = Math.max(shape[3], shape[4]);
      for (const opts of [
        { minSeqLen: n0 },
        // Every recursion level's bottom-left block is one diagonal block of all its keys.
        { minSeqLen: 4, blockSize: n0, sampleSize: 3 },
      ]) {
        const got = await hyperAttention(q, k, v, {
          causal: true,
          returnLse: true,
          backend,
          ...opts,
        });
        expectClose(got.o, ref.o, `causal o ${shape} ${JSON.stringify(opts)}`);
        expectClose(got.lse!, ref.lse, `causal lse ${shape} ${JSON.stringify(opts)}`);
      }
    }
  });

  it('with sampleSize 0 equals exact attention inside the LSH-sorted diagonal blocks (float64)', async () => {
    const [B, Hq, Hkv, Nq, Nk, D] = [1, 4, 2, 70, 90, 8];
    const { q, k, v } = inputs([B, Hq, Hkv, Nq, Nk, D, D], SEED + 20);
    const [blockSize, numProjections, seed] = [16, 3, 5];
    const got = await hyperAttention(q, k, v, {
      blockSize,
      sampleSize: 0,
      numProjections,
      seed,
      minSeqLen: 1,
      backend,
    });
    // The documented draw order: the hyperplanes come first from Rng(seed).
    const lsh = new AngularLsh({ numProjections, dim: D, rng: new Rng(seed) });
    const qb = lsh.buckets(q);
    const kb = lsh.buckets(k);
    const [Qd, Kd, Vd] = [q.toFloat64Array(), k.toFloat64Array(), v.toFloat64Array()];
    const want = new Float64Array(B * Hq * Nq * D);
    const blocks = diagonalBlocks(Nq, Nk, blockSize);
    const iota = (base: number, n: number) => Int32Array.from({ length: n }, (_, i) => base + i);
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / (Hq / Hkv));
      const sq = sortByBucket(iota(h * Nq, Nq), qb, numProjections);
      const sk = sortByBucket(iota(kh * Nk, Nk), kb, numProjections);
      for (let c = 0; c < blocks.count; c++) {
        const [qa, qe] = blocks.q(c);
        const [ka, ke] = blocks.k(c);
        for (let t = qa; t < qe; t++) {
          const i = sq[t]!;
          const s = [];
          for (let u = ka; u < ke; u++) {
            let dot = 0;
            for (let e = 0; e < D; e++) dot += Qd[i * D + e]! * Kd[sk[u]! * D + e]!;
            s.push(dot / Math.sqrt(D));
          }
          const m = Math.max(...s);
          const w = s.map((x) => Math.exp(x - m));
          const z = w.reduce((a, x) => a + x, 0);
          for (let u = ka; u < ke; u++)
            for (let e = 0; e < D; e++) want[i * D + e]! += (w[u - ka]! / z) * Vd[sk[u]! * D + e]!;
        }
      }
    }
    expectClose(got.o, Tensor.from(want, [B, Hq, Nq, D]), 'block-diagonal o');
  });

  it('gives O = 0 and LSE = -Infinity (never NaN) to rows without keys', async () => {
    // Causal with Nq > Nk: the first Nq - Nk queries see nothing (bottom-right alignment).
    const { q, k, v } = inputs([1, 2, 2, 50, 20, 8, 8], SEED + 30);
    const ref = softmaxAttentionReference(q, k, v, { causal: true });
    const got = await hyperAttention(q, k, v, {
      causal: true,
      minSeqLen: 4,
      blockSize: 8,
      sampleSize: 4,
      returnLse: true,
      backend,
    });
    const o = got.o.toFloat64Array();
    const lse = got.lse!.toFloat64Array();
    expect(o.every(Number.isFinite)).toBe(true);
    for (let h = 0; h < 2; h++) {
      for (let i = 0; i < 50; i++) {
        if (i < 30) {
          expect(lse[h * 50 + i]).toBe(Number.NEGATIVE_INFINITY);
          expect(o.subarray((h * 50 + i) * 8, (h * 50 + i + 1) * 8).every((x) => x === 0)).toBe(
            true,
          );
        } else expect(Number.isFinite(lse[h * 50 + i])).toBe(true);
      }
    }
    // Query 30 sees key 0 only, in an exact leaf.
    expect(
      accuracy(
        got.o.toFloat64Array().subarray(30 * 8, 31 * 8),
        ref.o.toFloat64Array().subarray(30 * 8, 31 * 8),
      ).relL2,
    ).toBeLessThan(1e-6);
  });

  it('setPackedCallBytes takes a positive integer (or nothing)', () => {
    for (const bad of [0, -4, 1.5, Number.NaN, '16' as never])
      expect(() => setPackedCallBytes(bad)).toThrow(
        expect.objectContaining({ name: 'ValueError', argument: 'bytes' }),
      );
    setPackedCallBytes();
  });

  it('gives the same result with the pieces split over many small calls (bounded memory)', async () => {
    // GQA, Nq != Nk, odd lengths: causal (recursion, exact rectangles, diagonal blocks,
    // residuals) and not; forward and backward.
    const [B, Hq, Hkv, Nq, Nk, D] = [1, 4, 2, 301, 333, 16];
    const { q, k, v } = inputs([B, Hq, Hkv, Nq, Nk, D, D], SEED + 50);
    const dO = new Rng(SEED + 51).randn([B, Hq, Nq, D]);
    for (const causal of [false, true]) {
      const opts = {
        blockSize: 16,
        sampleSize: 8,
        minSeqLen: 40,
        causal,
        backend,
        returnLse: true,
      };
      const run = async () => {
        const f = await hyperAttention(q, k, v, opts);
        const g = await hyperAttentionBackward(q, k, v, f.o, f.lse!, dO, opts);
        return [f.o, f.lse!, g.dq, g.dk, g.dv].map((t) => t.toFloat64Array());
      };
      const whole = await run();
      // 40 rows of 16 floats a call: dozens of calls.
      setPackedCallBytes(40 * 16 * 4);
      let split: Float64Array[];
      try {
        split = await run();
      } finally {
        setPackedCallBytes();
      }
      for (const [i, name] of ['o', 'lse', 'dq', 'dk', 'dv'].entries()) {
        const acc = accuracy(split[i]!, whole[i]!);
        expect(acc.nonFinite, `${name} causal ${causal} (seed ${SEED})`).toBe(0);
        expect(acc.relL2, `${name} causal ${causal} (seed ${SEED})`).toBeLessThan(1e-6);
      }
    }
  });

  it('is deterministic for a seed, differs between seeds, keeps f16 inputs f16', async () => {
    const { q, k, v } = inputs([1, 2, 1, 200, 200, 16, 16], SEED + 40, 'f16');
    const opts = { blockSize: 32, sampleSize: 16, minSeqLen: 64, causal: true, backend };
    const a = await hyperAttention(q, k, v, { ...opts, seed: 3 });
    const b = await hyperAttention(q, k, v, { ...opts, seed: 3 });
    const c = await hyperAttention(q, k, v, { ...opts, seed: 4 });
    expect(a.o.dtype).toBe('f16');
    expect(a.o.toFloat64Array()).toEqual(b.o.toFloat64Array());
    expect(a.o.toFloat64Array()).not.toEqual(c.o.toFloat64Array());
  });
});

describe('the estimator', () => {
  it('is unbiased: the mean over seeds of the estimated softmax numerator and denominator converges to the exact ones', async () => {
    // Flat scores and a residual holding 3/4 of every row's keys: a weight off by the block's
    // share ((Nk - blockSize) / m instead of Nk / m) would move the denominators' mean by ~0.19.
    const [N, D] = [64, 8];
    const rng = new Rng(77);
    const q = rng.randn([1, 1, N, D]);
    const k = rng.randn([1, 1, N, D]);
    const v = rng.randn([1, 1, N, D]);
    const ref = softmaxAttentionReference(q, k, v);
    const Z = ref.lse.toFloat64Array();
    const O = ref.o.toFloat64Array();
    const seeds = 400;
    const ratio = new Float64Array(N);
    const ratio2 = new Float64Array(N);
    const num = new Float64Array(N * D);
    const num2 = new Float64Array(N * D);
    for (let s = 0; s < seeds; s++) {
      const { o, lse } = await hyperAttention(q, k, v, {
        blockSize: 16,
        sampleSize: 8,
        minSeqLen: 1,
        numProjections: 2,
        seed: s,
        returnLse: true,
        backend: 'ts',
      });
      const L = lse!.toFloat64Array();
      const Oh = o.toFloat64Array();
      for (let i = 0; i < N; i++) {
        const r = Math.exp(L[i]! - Z[i]!);
        ratio[i]! += r;
        ratio2[i]! += r * r;
        for (let e = 0; e < D; e++) {
          const x = r * Oh[i * D + e]!;
          num[i * D + e]! += x;
          num2[i * D + e]! += x * x;
        }
      }
    }
    // Denominators: the mean over rows of mean_s Zhat / Z against 1, in standard errors.
    let mean = 0;
    let variance = 0;
    for (let i = 0; i < N; i++) {
      const m = ratio[i]! / seeds;
      mean += m / N;
      variance += (ratio2[i]! / seeds - m * m) / seeds / (N * N);
    }
    const se = Math.sqrt(variance);
    expect(se).toBeLessThan(0.01);
    expect(Math.abs(mean - 1)).toBeLessThan(4 * se);
    // Numerators (Zhat O hat / Z against O): a chi-square per degree of freedom near 1.
    let chi2 = 0;
    for (let x = 0; x < N * D; x++) {
      const m = num[x]! / seeds;
      const varMean = (num2[x]! / seeds - m * m) / seeds;
      chi2 += (m - O[x]!) ** 2 / varMean;
    }
    expect(chi2 / (N * D)).toBeLessThan(1.5);
  });

  it('gets closer to exact attention as sampleSize grows', async () => {
    const [N, D] = [512, 16];
    const rng = new Rng(SEED + 50);
    const q = rng.randn([1, 2, N, D]);
    const k = rng.randn([1, 2, N, D]);
    const v = rng.randn([1, 2, N, D]);
    const ref = softmaxAttentionReference(q, k, v).o;
    const err = async (sampleSize: number) => {
      let e = 0;
      for (let seed = 0; seed < 4; seed++) {
        const { o } = await hyperAttention(q, k, v, {
          blockSize: 32,
          sampleSize,
          minSeqLen: 1,
          seed,
        });
        e += accuracy(o, ref).relL2 / 4;
      }
      return e;
    };
    const [e8, e64, e512] = [await err(8), await err(64), await err(512)];
    // Sampling error ~ 1/sqrt(m): 8x from 8 to 512 draws in expectation.
    expect(e64, `seed ${SEED}`).toBeLessThan(e8);
    expect(e512, `seed ${SEED}`).toBeLessThan(e64);
    expect(e512, `seed ${SEED}`).toBeLessThan(0.4 * e8);
  });
});

describe('hyperAttention options', () => {
  const { q, k, v } = inputs([1, 2, 1, 16, 16, 8, 8], 1);

  it('rejects bad options with typed errors naming the argument', async () => {
    for (const [opts, name, arg] of [
      [{ blockSize: 0 }, 'ValueError', 'blockSize'],
      [{ blockSize: 2.5 }, 'ValueError', 'blockSize'],
      [{ sampleSize: -1 }, 'ValueError', 'sampleSize'],
      [{ numProjections: 0 }, 'ValueError', 'numProjections'],
      [{ numProjections: 31 }, 'ValueError', 'numProjections'],
      [{ minSeqLen: 0 }, 'ValueError', 'minSeqLen'],
      [{ seed: 0.5 }, 'ValueError', 'seed'],
      [{ returnLse: 1 }, 'ValueError', 'returnLse'],
      [{ causal: 'yes' }, 'ValueError', 'causal'],
      [{ scale: Number.NaN }, 'ValueError', 'scale'],
      [{ window: [2, 2] }, 'ValueError', 'window'],
      [{ backend: 'cuda' }, 'ValueError', 'backend'],
      // cpu tensors on the webgpu backend: nothing moves between devices implicitly.
      [{ backend: 'webgpu' }, 'DeviceError', 'q'],
    ] as const) {
      await expect(hyperAttention(q, k, v, opts as never), JSON.stringify(opts)).rejects.toThrow(
        expect.objectContaining({ name, argument: arg }),
      );
    }
    await expect(hyperAttention(q.astype('f64'), k.astype('f64'), v.astype('f64'))).rejects.toThrow(
      expect.objectContaining({ name: 'DTypeError', argument: 'q' }),
    );
    await expect(hyperAttention(q, Tensor.zeros([1, 3, 16, 8]), v)).rejects.toThrow(
      expect.objectContaining({ name: 'ShapeError' }),
    );
  });

  it('registers family hyper forward and backward on webgpu (webgpu), native and ts (cpu)', () => {
    for (const pass of ['forward', 'backward'] as const) {
      const regs = registeredKernels({ family: 'hyper', pass });
      expect(regs.map((r) => r.backend)).toEqual(['webgpu', 'native', 'ts']);
      expect(regs.map((r) => r.devices)).toEqual([['webgpu'], ['cpu'], ['cpu']]);
    }
  });
});
