import {
  accuracy,
  softmaxAttentionReference,
  softmaxAttentionReferenceBackward,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, it } from 'vitest';
import { AngularLsh, hyperAttention, hyperAttentionBackward, sortByBucket } from '../index.js';
import { resolveHyper } from '../options.js';
import { hyperBackwardWebGpu, hyperForwardWebGpu } from './host.js';
import { planHyperGpu } from './plan.js';

// HyperAttention on WebGPU (llvmpipe in CI) against the ts backend on the same seed (the same
// hyperplanes, buckets and draws, so the same estimate up to f32 rounding) and against the
// float64 reference in the exact limits. The context poisons outputs (NaN-filled), so every
// output element must be written. Fresh inputs per run; the seed is in every message.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());
const SEED = Math.floor(Math.random() * 2 ** 31);
const F32 = toleranceFor({ dtype: 'f32' });

const up = (t: Tensor) => toWebGpu(t, ctx!);
const down = async (t: Tensor) => t.toCpu();

function expectClose(actual: Tensor, ref: Tensor, what: string, tol = F32): void {
  const acc = accuracy(actual, ref);
  expect(acc.nonFinite, `${what}: non-finite (seed ${SEED})`).toBe(0);
  expect(acc.relL2, `${what}: relL2 (seed ${SEED})`).toBeLessThanOrEqual(tol);
}

// [B, Hq, Hkv, Nq, Nk, D, Dv]: GQA, odd lengths, Nq != Nk both ways, Dv != D.
type Shape = readonly [number, number, number, number, number, number, number];
function inputs(shape: Shape, seed: number) {
  const [B, Hq, Hkv, Nq, Nk, D, Dv] = shape;
  const rng = new Rng(seed);
  return {
    q: rng.randn([B, Hq, Nq, D]),
    k: rng.randn([B, Hkv, Nk, D]),
    v: rng.randn([B, Hkv, Nk, Dv]),
    dO: rng.randn([B, Hq, Nq, Dv]),
  };
}

/** Rows whose f64 dot product with some hyperplane is within f32 rounding of 0 (a sign may flip). */
function nearTies(lsh: AngularLsh, x: Float32Array, rows: number): Set<number> {
  const out = new Set<number>();
  const d = lsh.dim;
  for (let i = 0; i < rows; i++)
    for (let p = 0; p < lsh.numProjections; p++) {
      let dot = 0;
      let mag = 0;
      for (let c = 0; c < d; c++) {
        const t = x[i * d + c]! * lsh.projections[p * d + c]!;
        dot += t;
        mag += Math.abs(t);
      }
      if (Math.abs(dot) <= 1e-5 * mag) out.add(i);
    }
  return out;
}

describe.skipIf(!ctx)('AngularLsh.sortOnDevice on WebGPU', () => {
  it.each([3, 7, 11])(
    'P = %i: the ts buckets (but near-zero dot products) and the stable sort of the buckets',
    async (np) => {
      const rng = new Rng(SEED + np);
      const x = rng.randn([2, 3, 301, 16]);
      const lsh = new AngularLsh({ numProjections: np, dim: 16, seed: SEED });
      const want = lsh.sort(x);
      const got = await lsh.sortOnDevice(up(x));
      expect(got.buckets.dtype).toBe('i32');
      expect(got.buckets.shape).toEqual([2, 3, 301]);
      const buckets = (await down(got.buckets)).data() as Int32Array;
      const perm = (await down(got.perm)).data() as Int32Array;
      const ties = nearTies(lsh, x.data() as Float32Array, 6 * 301);
      let differ = 0;
      for (let i = 0; i < buckets.length; i++) {
        if (buckets[i] === want.buckets[i]) continue;
        differ++;
        expect(ties.has(i), `row ${i} bucket (seed ${SEED})`).toBe(true);
      }
      // The permutation is the stable sort of the GPU's own buckets (one radix pass for P <= 8,
      // two for P = 11), and the ts permutation where the buckets agree.
      const ids = Int32Array.from({ length: 301 }, (_, i) => i);
      for (let s = 0; s < 6; s++) {
        const slice = buckets.subarray(s * 301, (s + 1) * 301);
        expect(Array.from(perm.subarray(s * 301, (s + 1) * 301))).toEqual(
          Array.from(sortByBucket(ids, slice, np)),
        );
      }
      if (differ === 0) expect(Array.from(perm)).toEqual(Array.from(want.perm));
      got.buckets.dispose();
      got.perm.dispose();
    },
  );

  it('puts identical rows in one bucket and keeps their order', async () => {
    const rng = new Rng(SEED);
    const row = rng.randn([1, 1, 1, 8]).data() as Float32Array;
    const data = new Float32Array(40 * 8);
    for (let i = 0; i < 40; i++)
      data.set(i % 2 ? row : (rng.randn([8]).data() as Float32Array), i * 8);
    const x = Tensor.from(data, [1, 40, 8]);
    const lsh = new AngularLsh({ numProjections: 5, dim: 8, seed: 3 });
    const got = await lsh.sortOnDevice(up(x));
    const b = (await down(got.buckets)).data() as Int32Array;
    const perm = Array.from((await down(got.perm)).data() as Int32Array);
    for (let i = 3; i < 40; i += 2) expect(b[i]).toBe(b[1]);
    const odd = perm.filter((i) => i % 2 === 1);
    expect(odd).toEqual([...odd].sort((a, c) => a - c));
  });
});

describe.skipIf(!ctx)('hyperAttention on WebGPU', () => {
  const CASES: { name: string; shape: Shape; causal: boolean }[] = [
    { name: 'non-causal', shape: [1, 2, 2, 300, 300, 16, 16], causal: false },
    { name: 'non-causal GQA Nq != Nk', shape: [2, 4, 2, 157, 211, 16, 8], causal: false },
    { name: 'causal recursion', shape: [1, 2, 1, 301, 301, 16, 16], causal: true },
    { name: 'causal GQA Nq < Nk', shape: [1, 4, 2, 203, 290, 8, 12], causal: true },
    {
      name: 'causal Nq > Nk (rows without keys)',
      shape: [1, 2, 1, 233, 150, 16, 16],
      causal: true,
    },
  ];
  const OPTS = { blockSize: 32, sampleSize: 24, minSeqLen: 64, numProjections: 6 };

  it.each(CASES)('$name: the ts estimate on the same seed', async ({ shape, causal }) => {
    const { q, k, v } = inputs(shape, SEED);
    const o = { ...OPTS, causal, seed: SEED, returnLse: true };
    const want = await hyperAttention(q, k, v, { ...o, backend: 'ts' });
    const got = await hyperAttention(up(q), up(k), up(v), o);
    expect(got.o.device).toBe('webgpu');
    expect(got.o.shape).toEqual(want.o.shape);
    expectClose(await down(got.o), want.o, 'o');
    const lse = (await down(got.lse!)).data() as Float32Array;
    const wantLse = want.lse!.data() as Float32Array;
    // Rows without keys: LSE -inf on both; the rest compared as values.
    const finite = Array.from(wantLse).map((x) => (Number.isFinite(x) ? x : 0));
    expect(Array.from(lse).map((x) => (Number.isFinite(x) ? x : 0))).toEqual(
      finite.map((x) => expect.closeTo(x, 4)),
    );
    for (let i = 0; i < lse.length; i++)
      expect(Number.isFinite(lse[i]), `lse row ${i}`).toBe(Number.isFinite(wantLse[i]));
  });

  it('equals exact attention in the exact limits (float64 reference)', async () => {
    for (const [shape, causal, opts] of [
      [[2, 4, 2, 97, 120, 16, 8], false, { blockSize: 120, minSeqLen: 1 }],
      [[1, 2, 1, 150, 150, 16, 16], true, { minSeqLen: 200 }],
      [[1, 2, 2, 129, 140, 8, 8], true, { blockSize: 256, minSeqLen: 16 }],
    ] as const) {
      const { q, k, v } = inputs(shape, SEED + 1);
      const ref = softmaxAttentionReference(q, k, v, { causal });
      const got = await hyperAttention(up(q), up(k), up(v), {
        ...opts,
        causal,
        seed: SEED,
        returnLse: true,
      });
      expectClose(await down(got.o), ref.o, `o ${shape} causal ${causal}`);
      expectClose(await down(got.lse!), ref.lse, `lse ${shape} causal ${causal}`);
    }
  });

  it.each(CASES.slice(0, 4))(
    '$name: backward equals the ts backward',
    async ({ shape, causal }) => {
      const { q, k, v, dO } = inputs(shape, SEED + 2);
      const o = { ...OPTS, causal, seed: SEED, returnLse: true };
      const f = await hyperAttention(q, k, v, { ...o, backend: 'ts' });
      const want = await hyperAttentionBackward(q, k, v, f.o, f.lse!, dO, { ...o, backend: 'ts' });
      const gf = await hyperAttention(up(q), up(k), up(v), o);
      const got = await hyperAttentionBackward(up(q), up(k), up(v), gf.o, gf.lse!, up(dO), o);
      for (const name of ['dq', 'dk', 'dv'] as const) {
        expect(got[name].device).toBe('webgpu');
        expectClose(await down(got[name]), want[name], name, 2e-5);
      }
    },
  );

  it('several waves of heads (a small maxRows) give the one-wave result', async () => {
    const { q, k, v, dO } = inputs([2, 4, 2, 157, 170, 16, 8], SEED + 4);
    const [gq, gk, gv, gdo] = [up(q), up(k), up(v), up(dO)];
    for (const causal of [false, true]) {
      const r = resolveHyper(gq, gk, gv, { ...OPTS, causal, seed: SEED });
      expect(planHyperGpu(r, 200).waves.length).toBeGreaterThan(4);
      const t = { q: gq, k: gk, v: gv };
      const one = await hyperForwardWebGpu(t, r);
      const many = await hyperForwardWebGpu(t, r, { maxRows: 200 });
      expectClose(await down(many.o), await down(one.o), `o causal ${causal}`, 1e-6);
      expectClose(await down(many.lse), await down(one.lse), `lse causal ${causal}`, 1e-6);
      const b = { ...t, o: one.o, lse: one.lse, dO: gdo };
      const g1 = await hyperBackwardWebGpu(b, r);
      const gm = await hyperBackwardWebGpu(b, r, { maxRows: 200 });
      for (const name of ['dq', 'dk', 'dv'] as const)
        expectClose(await down(gm[name]), await down(g1[name]), `${name} causal ${causal}`, 1e-6);
    }
  });

  it('backward equals the exact gradients in the exact limit', async () => {
    const { q, k, v, dO } = inputs([1, 4, 2, 77, 90, 16, 16], SEED + 3);
    const o = { blockSize: 128, minSeqLen: 1, returnLse: true };
    const f = await hyperAttention(up(q), up(k), up(v), o);
    const g = await hyperAttentionBackward(up(q), up(k), up(v), f.o, f.lse!, up(dO), o);
    const ref = softmaxAttentionReferenceBackward(q, k, v, dO);
    for (const name of ['dq', 'dk', 'dv'] as const)
      expectClose(await down(g[name]), ref[name], name);
  });

  it('bad inputs are typed errors naming the argument', async () => {
    const { q, k, v, dO } = inputs([1, 2, 1, 20, 20, 8, 8], SEED);
    const [gq, gk, gv] = [up(q), up(k), up(v)];
    await expect(hyperAttention(gq, k, gv)).rejects.toThrow(
      expect.objectContaining({ name: 'DeviceError', argument: 'k' }),
    );
    await expect(hyperAttention(gq, gk, v)).rejects.toThrow(
      expect.objectContaining({ name: 'DeviceError', argument: 'v' }),
    );
    await expect(hyperAttention(gq, gk, gv, { backend: 'ts' })).rejects.toThrow(
      expect.objectContaining({ name: 'DeviceError' }),
    );
    await expect(hyperAttention(q, k, v, { backend: 'webgpu' })).rejects.toThrow(
      expect.objectContaining({ name: 'DeviceError' }),
    );
    await expect(
      hyperAttention(up(q.astype('f16')), up(k.astype('f16')), up(v.astype('f16'))),
    ).rejects.toThrow(expect.objectContaining({ name: 'UnsupportedError' }));
    const f = await hyperAttention(gq, gk, gv, { returnLse: true, minSeqLen: 1 });
    await expect(
      hyperAttentionBackward(gq, gk, gv, await f.o.toCpu(), f.lse!, up(dO), { minSeqLen: 1 }),
    ).rejects.toThrow(expect.objectContaining({ name: 'DeviceError', argument: 'o' }));
    await expect(
      hyperAttentionBackward(gq, gk, gv, f.o, f.lse!, dO, { minSeqLen: 1 }),
    ).rejects.toThrow(expect.objectContaining({ name: 'DeviceError', argument: 'dO' }));
    const lsh = new AngularLsh({ numProjections: 4, dim: 8 });
    expect(() => lsh.sort(gq)).toThrow(
      expect.objectContaining({ name: 'DeviceError', argument: 'x' }),
    );
  });
});
