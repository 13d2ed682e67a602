import { accuracy, softmaxAttentionReference, UnsupportedError } from '@attnkit/attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { sageAttention } from './index.js';

/**
 * sageAttention on webgpu tensors (the portable dot4I8Packed kernels; llvmpipe here) through the
 * package: equal to the ts spec to f32 rounding (ARITHMETIC.md "Equality across backends": O
 * within relative L2 1e-4), per-head bits and calibration-style arrays, f16 inputs, and what
 * the webgpu backend declines (BSHD); the lse with the smoothing shift added back. Outputs
 * start poisoned (NaN).
 */
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

describe.skipIf(!ctx)('sageAttention on webgpu', () => {
  const rng = new Rng(Date.now() % 100000);
  const q = rng.randn([2, 4, 77, 64]);
  const k = rng.randn([2, 2, 131, 64]);
  const v = rng.randn([2, 2, 131, 32]);
  const up = (t: Tensor, dt: 'f32' | 'f16' = 'f32') =>
    toWebGpu(dt === 'f32' ? t : t.astype(dt), ctx!);

  test('equals the ts spec (GQA, Nq != Nk, Dv != D, causal, per-head bits, thread groups)', async () => {
    const opts = {
      causal: true,
      qkBits: [8, 4, 8, 8] as (4 | 8)[],
      granularity: 'thread' as const,
    };
    const gpu = await sageAttention(up(q), up(k), up(v), opts);
    expect(gpu.o.device).toBe('webgpu');
    const o = await gpu.o.toCpu();
    const ts = await sageAttention(q, k, v, { ...opts, backend: 'ts' });
    expect(accuracy(o, ts.o).nonFinite).toBe(0);
    // ARITHMETIC.md "Equality across backends": rows within 1e-5 of the spec, except rows where
    // a P~ code flipped (exp differs by ulps): at most 1% of rows + 2, each within 1e-2.
    const a = o.toFloat32Array();
    const b = ts.o.toFloat32Array();
    const dv = 32;
    let flipped = 0;
    for (let r = 0; r < a.length / dv; r++) {
      const row = accuracy(a.subarray(r * dv, (r + 1) * dv), b.subarray(r * dv, (r + 1) * dv));
      if (row.relL2 > 1e-5) {
        flipped++;
        expect(row.relL2, `row ${r}`).toBeLessThanOrEqual(1e-2);
      }
    }
    expect(flipped).toBeLessThanOrEqual(Math.floor(a.length / dv / 100) + 2);
    gpu.o.dispose();
  });

  test('f16 inputs; o f32; the bars vs float64', async () => {
    const gpu = await sageAttention(up(q, 'f16'), up(k, 'f16'), up(v, 'f16'), {});
    expect(gpu.o.dtype).toBe('f32');
    const ref = softmaxAttentionReference(q.astype('f16'), k.astype('f16'), v.astype('f16'), {}).o;
    const a = accuracy(await gpu.o.toCpu(), ref);
    expect(a.cosine).toBeGreaterThanOrEqual(0.999);
    expect(a.relL1).toBeLessThanOrEqual(0.03);
    gpu.o.dispose();
  });

  test('lse (the smoothK shift added back, as on the cpu); BSHD declined', async () => {
    const ref = softmaxAttentionReference(q, k, v, { causal: true });
    for (const smoothK of [true, false]) {
      const gpu = await sageAttention(up(q), up(k), up(v), {
        returnLse: true,
        smoothK,
        causal: true,
      });
      expect(gpu.lse!.device).toBe('webgpu');
      const lse = await gpu.lse!.toCpu();
      const cpu = await sageAttention(q, k, v, {
        returnLse: true,
        smoothK,
        causal: true,
        backend: 'ts',
      });
      expect(accuracy(lse, cpu.lse!).maxAbs).toBeLessThan(1e-4);
      expect(accuracy(lse, ref.lse).maxAbs).toBeLessThan(0.12);
    }
    const t = (x: Tensor) => up(x.permute([0, 2, 1, 3]).contiguous());
    await expect(sageAttention(t(q), t(k), t(v), { layout: 'BSHD' })).rejects.toBeInstanceOf(
      UnsupportedError,
    );
  });

  test('tensorCores: false is the portable kernel (as unset on this adapter); what cannot run is a ValueError naming it', async () => {
    const unset = await sageAttention(up(q), up(k), up(v), { causal: true });
    const portable = await sageAttention(up(q), up(k), up(v), { causal: true, tensorCores: false });
    const [a, b] = [await unset.o.toCpu(), await portable.o.toCpu()];
    expect(accuracy(a, b).nonFinite).toBe(0);
    // The same kernel: the same bits.
    expect(Array.from(a.toFloat32Array())).toEqual(Array.from(b.toFloat32Array()));
    unset.o.dispose();
    portable.o.dispose();
    // llvmpipe has no subgroup matrices: asking for a tensor-core kernel says so.
    for (const tensorCores of [true, { engine: 'f16' as const }, { engine: 'i8' as const }])
      await expect(
        sageAttention(up(q), up(k), up(v), { tensorCores }),
        JSON.stringify(tensorCores),
      ).rejects.toMatchObject({ name: 'ValueError', argument: 'tensorCores' });
    await expect(
      sageAttention(up(q), up(k), up(v), { tensorCores: 'yes' as unknown as boolean }),
    ).rejects.toMatchObject({ name: 'ValueError', argument: 'tensorCores' });
  });
});
