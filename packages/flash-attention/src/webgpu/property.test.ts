import { toleranceFor } from '@attnkit/attention';
import { DeviceError, DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { checkOnWebGpu, FLAVORS, randomCase, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import {
  flashAttention,
  flashAttentionBackward,
  flashAttentionBackwardWebGpu,
  flashAttentionWebGpu,
} from '../index.js';

// Fails here when no adapter can be had (Dawn on Mesa llvmpipe in CI), unless
// ATTNKIT_ALLOW_NO_WEBGPU=1 declares a machine without WebGPU.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

describe.skipIf(!ctx)('WGSL FlashAttention-2 on WebGPU: random problems', () => {
  // Every option of KERNELS.md "Common" at random small shapes: odd lengths, Nq != Nk, GQA/MQA,
  // D in {16, 40, 64, 80, 128}, Dv != D, causal, window, varlen with an empty sequence,
  // block-sparse (shared and per head), rows without keys.
  const rng = new Rng(20261122);
  const cases = FLAVORS.flatMap((flavor) => [0, 1].map(() => randomCase(rng, flavor)));
  test.each(cases.map((c) => [c.name, c] as const))('f32 %s', async (_, c) => {
    await checkOnWebGpu(ctx!, c, c.options, toleranceFor({ dtype: 'f32' }), c.name);
  });

  const halfRng = new Rng(7);
  const halfCases = (
    ['plain', 'nq>nk causal', 'gqa', 'varlen', 'sparse per-head', 'dv!=d'] as const
  ).flatMap((flavor) =>
    (['f16', 'bf16'] as const).map((dtype) => randomCase(halfRng, flavor, dtype)),
  );
  test.each(halfCases.map((c) => [`${c.q.dtype} ${c.name}`, c] as const))('%s', async (_, c) => {
    const tol = toleranceFor({ dtype: c.q.dtype as 'f16' | 'bf16' });
    await checkOnWebGpu(ctx!, c, c.options, tol, c.name);
  });

  test('head dims that are not multiples of 4 take the scalar paths', async () => {
    const r = new Rng(11);
    for (const [dtype, d, dv] of [
      ['f32', 5, 7],
      ['f16', 6, 10],
      ['bf16', 2, 14],
    ] as const) {
      const c = {
        q: r.randn([2, 2, 19, d], dtype),
        k: r.randn([2, 1, 23, d], dtype),
        v: r.randn([2, 1, 23, dv], dtype),
        dO: r.randn([2, 2, 19, dv], dtype),
      };
      const options = { causal: true, window: [9, -1] as const };
      await checkOnWebGpu(ctx!, c, options, toleranceFor({ dtype }), `${dtype} d${d} dv${dv}`);
    }
  });

  // Other tile shapes than the planner's: 8 rows per thread (rv 2), several column groups,
  // shallow chunks, row groups R4 = ty rv with zt swizzle masks 3, 7 and 0 (R4 = 3, not a power
  // of two); on a causal problem and on a windowed block-sparse GQA one.
  const TILES = [
    { tx: 4, ty: 4, rv: 1, cu: 2, kc: 8, mc: 8 },
    { tx: 4, ty: 4, rv: 2, cu: 1, kc: 8, mc: 16 },
    { tx: 8, ty: 2, rv: 2, cu: 2, kc: 4, mc: 4 },
    { tx: 4, ty: 3, rv: 1, cu: 1, kc: 8, mc: 8 },
  ];
  test.each(TILES.map((t) => [JSON.stringify(t), t] as const))('tiles %s', async (_, tiles) => {
    const r = new Rng(12);
    const c = {
      q: r.randn([1, 4, 45, 32]),
      k: r.randn([1, 2, 50, 32]),
      v: r.randn([1, 2, 50, 24]),
      dO: r.randn([1, 4, 45, 24]),
    };
    const all = { forward: tiles, dq: tiles, dkdv: tiles };
    const tol = toleranceFor({ dtype: 'f32' });
    await checkOnWebGpu(ctx!, c, { causal: true, tiles: all }, tol, 'causal');
    const mask = Tensor.from(
      Uint8Array.from({ length: 4 * 4 * 5 }, () => (r.uniform() < 0.7 ? 1 : 0)),
      [1, 4, 4, 5],
    );
    const options = {
      window: [12, 3] as const,
      blockSparse: { blockQ: 12, blockK: 10, mask },
      tiles: all,
    };
    await checkOnWebGpu(ctx!, c, options, tol, 'window + block-sparse');
  });

  test('all rows masked: O = 0, LSE = -inf, zero gradients, no NaN', async () => {
    const r = new Rng(13);
    const c = {
      q: r.randn([1, 1, 30, 16]),
      k: r.randn([1, 1, 40, 16]),
      v: r.randn([1, 1, 40, 16]),
      dO: r.randn([1, 1, 30, 16]),
    };
    const mask = Tensor.from(new Uint8Array(4), [2, 2]);
    await checkOnWebGpu(
      ctx!,
      c,
      { blockSparse: { blockQ: 16, blockK: 32, mask } },
      toleranceFor({ dtype: 'f32' }),
      'empty mask',
    );
  });

  test('flashAttention dispatches webgpu tensors to the WGSL kernels', async () => {
    const r = new Rng(15);
    const [q, k, v, dO] = [0, 1, 2, 3].map(() => r.randn([1, 2, 9, 8]));
    const [gq, gk, gv, gdo] = [q!, k!, v!, dO!].map((t) => toWebGpu(t, ctx!));
    const { o, lse } = await flashAttention(gq!, gk!, gv!, { causal: true });
    expect([o.device, lse.device]).toEqual(['webgpu', 'webgpu']);
    const grads = await flashAttentionBackward(gq!, gk!, gv!, o, lse, gdo!, { causal: true });
    expect(grads.dq.device).toBe('webgpu');
    const ts = await flashAttention(q!, k!, v!, { causal: true, backend: 'ts' });
    const diff = (await o.toCpu())
      .toFloat32Array()
      .map((x, i) => Math.abs(x - ts.o.toFloat32Array()[i]!));
    expect(Math.max(...diff)).toBeLessThan(1e-5);
    // Nothing moves between devices implicitly.
    await expect(flashAttention(q!, k!, v!, { backend: 'webgpu' })).rejects.toThrow(DeviceError);
  });

  test('validates its inputs with typed errors', async () => {
    const r = new Rng(14);
    const q = r.randn([1, 2, 8, 16]);
    const k = r.randn([1, 2, 8, 16]);
    const [gq, gk, gv] = [toWebGpu(q, ctx!), toWebGpu(k, ctx!), toWebGpu(k, ctx!)];
    await expect(flashAttentionWebGpu(q, k, k)).rejects.toThrow(DeviceError);
    await expect(flashAttentionWebGpu(gq, gk, gv, { algorithm: 'fa1' })).rejects.toThrow(
      /backend: 'webgpu' cannot run this softmax forward: the WGSL kernels implement FA2 only/,
    );
    const h = toWebGpu(r.randn([1, 1, 4, 3], 'f16'), ctx!);
    await expect(flashAttentionWebGpu(h, h, h)).rejects.toThrow(/head dims must be even/);
    await expect(
      flashAttentionWebGpu(gq, gk, gv, { tiles: { forward: { tx: 3, ty: 4 } } }),
    ).rejects.toThrow(ValueError);
    const { o, lse } = await flashAttentionWebGpu(gq, gk, gv);
    await expect(flashAttentionBackwardWebGpu(gq, gk, gv, o, o, o)).rejects.toThrow(ShapeError);
    await expect(flashAttentionBackwardWebGpu(gq, gk, gv, o, lse, lse)).rejects.toThrow(ShapeError);
    const half = toWebGpu(r.randn([1, 2, 8, 16], 'f16'), ctx!);
    await expect(flashAttentionBackwardWebGpu(gq, gk, gv, o, lse, half)).rejects.toThrow(
      DTypeError,
    );
    await expect(flashAttentionBackwardWebGpu(gq, gk, gv, o, lse, q)).rejects.toThrow(DeviceError);
  });
});
