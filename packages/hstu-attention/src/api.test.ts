import {
  accuracy,
  hstuAttentionReference,
  hstuAttentionReferenceBackward,
  toleranceFor,
} from '@attnkit/attention';
import { Rng, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { type HstuAttentionOptions, hstuAttention, hstuAttentionBackward } from './index.js';

// The public functions (the conformance suite calls the registrations): dispatch, dtypes,
// defaults, and the skeleton options HSTU passes through.
const rng = new Rng(11);
const seqOffsets = Int32Array.of(0, 13, 13, 40);
const options: HstuAttentionOptions = { seqOffsets, maxSeqLen: 30, alpha: 0.3 };
const q = rng.randn([40, 2, 16]);
const k = rng.randn([40, 2, 16]);
const v = rng.randn([40, 2, 24]);
const tol = toleranceFor({ dtype: 'f32', maxSeqLen: 30 });

describe('hstuAttention / hstuAttentionBackward', () => {
  test('default backend, causal by default: matches the float64 reference', async () => {
    const { o } = await hstuAttention(q, k, v, options);
    expect(o.shape).toEqual([40, 2, 24]);
    expect(o.dtype).toBe('f32');
    const ref = hstuAttentionReference(q, k, v, { ...options, causal: true });
    expect(accuracy(o, ref.o).relL2).toBeLessThanOrEqual(tol);
    const dO = rng.randn([40, 2, 24]);
    const g = await hstuAttentionBackward(q, k, v, dO, options);
    const rg = hstuAttentionReferenceBackward(q, k, v, dO, { ...options, causal: true });
    for (const n of ['dq', 'dk', 'dv'] as const) {
      expect(g[n].shape).toEqual(rg[n].shape);
      expect(accuracy(g[n], rg[n]).relL2, n).toBeLessThanOrEqual(tol);
    }
  });

  test('mask options on every cpu backend match the reference', async () => {
    const masked: HstuAttentionOptions = {
      ...options,
      numTargets: [3, 0, 27],
      contextualSeqLen: 2,
      maxAttnLen: 4,
      minFullAttnSeqLen: 1,
    };
    const ref = hstuAttentionReference(q, k, v, masked);
    const dO = rng.randn([40, 2, 24]);
    const rg = hstuAttentionReferenceBackward(q, k, v, dO, masked);
    for (const backend of [undefined, 'ts', 'native'] as const) {
      const { o } = await hstuAttention(q, k, v, { ...masked, backend });
      expect(accuracy(o, ref.o).relL2, `o ${backend}`).toBeLessThanOrEqual(tol);
      const g = await hstuAttentionBackward(q, k, v, dO, { ...masked, backend });
      for (const n of ['dq', 'dk', 'dv'] as const)
        expect(accuracy(g[n], rg[n]).relL2, `${n} ${backend}`).toBeLessThanOrEqual(tol);
    }
    // All-zero numTargets (and no other option) is no mask: the plain causal path.
    const none = await hstuAttention(q, k, v, { ...options, numTargets: [0, 0, 0] });
    expect(accuracy(none.o, hstuAttentionReference(q, k, v, options).o).relL2).toBeLessThanOrEqual(
      tol,
    );
  });

  test('f16 inputs give f16 outputs on every cpu backend', async () => {
    const h = (t: typeof q) => t.astype('f16');
    for (const backend of ['ts', 'native'] as const) {
      const { o } = await hstuAttention(h(q), h(k), h(v), { ...options, backend });
      expect(o.dtype).toBe('f16');
      const ref = hstuAttentionReference(h(q), h(k), h(v), options);
      expect(accuracy(o, ref.o).relL2).toBeLessThanOrEqual(
        toleranceFor({ dtype: 'f16', maxSeqLen: 30 }),
      );
    }
  });

  test('a mask mod on silu: masked scores (-inf in the tile) weigh 0, not -inf * 0 = NaN', async () => {
    // Not causal, with a mask mod that is the causal rule: the mod's element test masks the
    // upper half of the diagonal tiles to -inf, and the result must be the causal one.
    const maskMod = {
      name: 'lower',
      ts: (_b: number, _h: number, i: number, j: number) => j <= i,
      wgsl: 'fn lower(b: u32, h: u32, i: u32, j: u32) -> bool { return j <= i; }',
      blockSize: 8,
    };
    const { o } = await hstuAttention(q, k, v, {
      ...options,
      causal: false,
      maskMod,
      backend: 'ts',
      blockQ: 8,
      blockK: 8,
    });
    const ref = hstuAttentionReference(q, k, v, options);
    expect(accuracy(o, ref.o).nonFinite).toBe(0);
    expect(accuracy(o, ref.o).relL2).toBeLessThanOrEqual(tol);
  });

  test('bad options are typed errors naming the option', async () => {
    await expect(hstuAttention(q, k, v, { ...options, maxSeqLen: 26 })).rejects.toThrow(ValueError);
    await expect(hstuAttention(q, k, v, { ...options, maxSeqLen: 26 })).rejects.toMatchObject({
      argument: 'maxSeqLen',
    });
    await expect(
      hstuAttention(q, k, v, undefined as unknown as HstuAttentionOptions),
    ).rejects.toMatchObject({ argument: 'seqOffsets' });
  });
});
