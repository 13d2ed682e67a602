import { softmaxAttentionReference } from '@attnkit/attention';
import { Rng, type Tensor, ValueError } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { describe, expect, test } from 'vitest';
import { defineTiledFamily } from './family.js';
import { tiledForwardWebGpu } from './webgpu/host.js';

// Paged K/V (AttentionOptions.paged) at the skeleton: any tiled family takes it in the forward;
// the cases the paged row addressing does not cover are refused with a ValueError naming
// `paged` before anything runs (permuted tiles, FA1's loop order, the backward, tensorCores).
// The kernels' numbers are tested per backend in lean-attention's paged.test.ts and native's.

const family = defineTiledFamily({
  family: 'paged-test',
  normalize: () => ({ kind: 'softmax' }),
  extraOptions: [],
  forwardOutputs: ['o', 'lse'],
});

/** Two sequences (5 and 3 keys) in a pool of 4 pages of 4, pages out of order. */
function problem() {
  const rng = new Rng(2);
  const q = rng.randn([2, 2, 2, 8]);
  const k = rng.randn([4, 4, 1, 8]);
  const v = rng.randn([4, 4, 1, 8]);
  const paged = {
    pageSize: 4,
    blockTable: Int32Array.of(3, 0, 2, -1),
    lengths: Int32Array.of(5, 3),
  };
  return { q, k, v, paged };
}

const argumentOf = async (p: Promise<unknown>) => {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(ValueError);
  return (e as ValueError).argument;
};

describe('paged K/V on a tiled family', () => {
  test('the forward on ts equals the float64 reference (fa2 loop, split-K, stream-K)', async () => {
    const { q, k, v, paged } = problem();
    const ref = softmaxAttentionReference(q, k, v, { paged, causal: true });
    for (const o of [{}, { numSplits: 2 }, { streamKWorkers: 3 }]) {
      const r = await family.forward(q, k, v, { ...o, paged, causal: true, backend: 'ts' });
      expectClose(r.o, ref.o, 1e-5, `${JSON.stringify(o)} o`);
      expectClose(r.lse!, ref.lse, 1e-5, `${JSON.stringify(o)} lse`);
    }
  });

  test('refused with a ValueError naming paged: permute, fa1, the backward, tensorCores', async () => {
    const { q, k, v, paged } = problem();
    // A valid key permutation ([B, Hkv, maxSeqK]: slices of 5 and 3 keys, padding after).
    const permute = { k: Int32Array.of(4, 3, 2, 1, 0, 2, 0, 1, 0, 0) };
    expect(
      await argumentOf(family.forward(q, k, v, { paged, backend: 'ts', algorithm: 'fa1' })),
    ).toBe('paged');
    const dO = new Rng(3).randn([2, 2, 2, 8]);
    const r = await family.forward(q, k, v, { paged, backend: 'ts' });
    expect(
      await argumentOf(family.backward(q, k, v, r.o, r.lse, dO, { paged, backend: 'ts' })),
    ).toBe('paged');
    expect(await argumentOf(family.forward(q, k, v, { paged, backend: 'ts', permute }))).toBe(
      'paged',
    );
    const ctx = await webGpuTestContext();
    if (!ctx) return;
    try {
      const [qg, kg, vg] = [q, k, v].map((t) => toWebGpu(t, ctx)) as [Tensor, Tensor, Tensor];
      // tensorCores is an option of the WebGPU forward itself (not of a family).
      const { p, hooks } = family.resolve(q, k, v, { paged });
      expect(
        await argumentOf(tiledForwardWebGpu(p, hooks, qg, kg, vg, { tensorCores: true })),
      ).toBe('paged');
      for (const t of [qg, kg, vg]) t.dispose();
    } finally {
      ctx.destroy();
    }
  });
});
