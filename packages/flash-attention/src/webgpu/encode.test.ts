import { Rng, ShapeError, Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { type ComputeStep, toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import {
  encodeFlashAttention,
  encodeFlashAttentionBackward,
  type FlashAttentionOptions,
  flashAttention,
  flashAttentionBackward,
} from '../index.js';

// Fails here when no adapter can be had (Dawn on Mesa llvmpipe in CI), unless
// ATTNKIT_ALLOW_NO_WEBGPU=1 declares a machine without WebGPU.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

/**
 * A sink that keeps the steps and their scratch buffers; `run` encodes and submits the steps as
 * one dispatch, then gives the scratch back to the pool (as WebGpuEncodeTarget asks).
 */
function collector() {
  const steps: ComputeStep[] = [];
  const scratch: GPUBuffer[] = [];
  return {
    steps,
    scratch,
    sink: (s: readonly ComputeStep[], buffers: readonly GPUBuffer[]) => {
      steps.push(...s);
      scratch.push(...buffers);
    },
    run: async () => {
      await ctx!.dispatch(steps);
      for (const b of scratch.splice(0)) ctx!.pool.release(b);
      steps.length = 0;
    },
  };
}

const values = async (t: Tensor) => [...(await t.toCpu()).toFloat64Array()];

/** A webgpu tensor of `shape` filled with NaN: whatever the kernel leaves unwritten shows. */
const poisoned = (shape: number[], dtype: 'f32' | 'f16') =>
  toWebGpu(
    Tensor.from(new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(Number.NaN), shape).astype(
      dtype,
    ),
    ctx!,
  );

describe.skipIf(!ctx)('encodeFlashAttention: the synchronous path into a caller encoder', () => {
  const rng = new Rng(20261203);
  const cases: [string, 'f32' | 'f16', number[], FlashAttentionOptions][] = [
    ['f32 gqa causal, odd lengths', 'f32', [2, 4, 2, 19, 27, 16, 24], { causal: true }],
    ['f16 window, nq > nk', 'f16', [1, 3, 1, 33, 21, 32, 32], { window: [7, 3], scale: 0.2 }],
    // Decode-sized (group x Nq <= 64 rows per kv head): the decode kernel, one dispatch.
    ['f32 decode, 2 new tokens, gqa', 'f32', [2, 8, 2, 2, 45, 64, 64], { causal: true }],
    ['f16 decode, 1 token', 'f16', [1, 4, 4, 1, 130, 32, 16], {}],
  ];
  test.each(cases)(
    "%s: undefined until compiled, then the async path's results in the given outputs",
    async (_, dtype, dims, opts) => {
      const [b, hq, hkv, nq, nk, d, dv] = dims as [
        number,
        number,
        number,
        number,
        number,
        number,
        number,
      ];
      const g = (shape: number[]) => toWebGpu(rng.randn(shape).astype(dtype), ctx!);
      const q = g([b, hq, nq, d]);
      const k = g([b, hkv, nk, d]);
      const v = g([b, hkv, nk, dv]);
      const dO = g([b, hq, nq, dv]);
      const first = collector();
      // Nothing compiled in this file yet: only the async API can run it, and nothing was made.
      expect(encodeFlashAttention(q, k, v, opts, first)).toBeUndefined();
      expect(first.steps).toHaveLength(0);
      const want = await flashAttention(q, k, v, opts);
      const wantGrads = await flashAttentionBackward(q, k, v, want.o, want.lse, dO, opts);

      const fwd = collector();
      const outputs = { o: poisoned([b, hq, nq, dv], dtype), lse: poisoned([b, hq, nq], 'f32') };
      const got = encodeFlashAttention(q, k, v, opts, { sink: fwd.sink, outputs });
      expect(got?.o).toBe(outputs.o);
      expect(got?.lse).toBe(outputs.lse);
      expect(fwd.steps).toHaveLength(1);
      await fwd.run();
      expect(await values(outputs.o)).toEqual(await values(want.o));
      expect(await values(outputs.lse)).toEqual(await values(want.lse));

      const bwd = collector();
      const gradOutputs = {
        dq: poisoned(q.shape as number[], dtype),
        dk: poisoned(k.shape as number[], dtype),
        dv: poisoned(v.shape as number[], dtype),
      };
      const grads = encodeFlashAttentionBackward(q, k, v, want.o, want.lse, dO, opts, {
        sink: bwd.sink,
        outputs: gradOutputs,
      });
      expect(grads?.dq).toBe(gradOutputs.dq);
      // D pre-pass, dK/dV, dQ.
      expect(bwd.steps.length).toBeGreaterThanOrEqual(3);
      await bwd.run();
      for (const name of ['dq', 'dk', 'dv'] as const)
        expect(await values(gradOutputs[name]), name).toEqual(await values(wantGrads[name]));

      // Without outputs the kernels make their own.
      const own = collector();
      const made = encodeFlashAttention(q, k, v, opts, own);
      await own.run();
      expect(await values(made!.o)).toEqual(await values(want.o));
    },
  );

  test('bad outputs are typed errors and nothing reaches the sink; what only the async path runs is declined', async () => {
    const g = (shape: number[]) => toWebGpu(rng.randn(shape), ctx!);
    const q = g([1, 2, 20, 8]);
    const k = g([1, 2, 11, 8]);
    const v = g([1, 2, 11, 8]);
    const dO = g([1, 2, 20, 8]);
    const r = await flashAttention(q, k, v);
    await flashAttentionBackward(q, k, v, r.o, r.lse, dO);
    const c = collector();
    expect(() =>
      encodeFlashAttention(q, k, v, {}, { ...c, outputs: { o: g([1, 2, 20, 4]) } }),
    ).toThrow(ShapeError);
    expect(() =>
      encodeFlashAttention(q, k, v, {}, { ...c, outputs: { lse: g([1, 2, 19]) } }),
    ).toThrow(/lse: expected shape \[1, 2, 20\]/);
    expect(() =>
      encodeFlashAttentionBackward(
        q,
        k,
        v,
        r.o,
        r.lse,
        dO,
        {},
        { ...c, outputs: { dk: g([1, 2, 20, 8]) } },
      ),
    ).toThrow(/dk: expected shape/);
    // An output may not share a buffer with an input or another output.
    expect(() => encodeFlashAttention(q, k, v, {}, { ...c, outputs: { o: q } })).toThrow(
      /outputs.o: expected a tensor of its own/,
    );
    const shared = g([1, 2, 11, 8]);
    expect(() =>
      encodeFlashAttentionBackward(
        q,
        k,
        v,
        r.o,
        r.lse,
        dO,
        {},
        {
          ...c,
          outputs: { dk: shared, dv: shared },
        },
      ),
    ).toThrow(/outputs.dv: expected a tensor of its own/);
    expect(() =>
      encodeFlashAttentionBackward(q, k, v, r.o, r.lse, dO, {}, { ...c, outputs: { dq: dO } }),
    ).toThrow(/outputs.dq: expected a tensor of its own/);
    expect(c.steps).toHaveLength(0);
    expect(() =>
      encodeFlashAttention(q, k, v, {}, { sink: 5 } as unknown as Parameters<
        typeof encodeFlashAttention
      >[4]),
    ).toThrow(/target.sink: expected a function/);
    // Two launches into one command buffer: each keeps its own uniforms until the submit (the
    // scratch buffers are the caller's until it releases them).
    const two = collector();
    const a = encodeFlashAttention(q, k, v, { scale: 0.1 }, two)!;
    const b = encodeFlashAttention(q, k, v, { scale: 0.9 }, two)!;
    expect(two.scratch.length).toBeGreaterThan(0);
    await two.run();
    const [wa, wb] = [
      await flashAttention(q, k, v, { scale: 0.1 }),
      await flashAttention(q, k, v, { scale: 0.9 }),
    ];
    expect(await values(a.o)).toEqual(await values(wa.o));
    expect(await values(b.o)).toEqual(await values(wb.o));
    // Several dispatches (split-K), a read-back (checkFinite; the sinks' gradient), cpu tensors.
    expect(encodeFlashAttention(q, k, v, { numSplits: 2 }, c)).toBeUndefined();
    const one = g([1, 2, 1, 8]);
    await flashAttention(one, k, v);
    expect(encodeFlashAttention(one, k, v, { numSplits: 2 }, c)).toBeUndefined();
    expect(encodeFlashAttention(q, k, v, { checkFinite: true }, c)).toBeUndefined();
    const cq = rng.randn([1, 2, 20, 8]);
    const ck = rng.randn([1, 2, 11, 8]);
    expect(encodeFlashAttention(cq, ck, ck, {}, c)).toBeUndefined();
    const sinks = [0.5, -1];
    const rs = await flashAttention(q, k, v, { sinks });
    await flashAttentionBackward(q, k, v, rs.o, rs.lse, dO, { sinks });
    expect(encodeFlashAttentionBackward(q, k, v, rs.o, rs.lse, dO, { sinks }, c)).toBeUndefined();
    expect(c.steps).toHaveLength(0);
    // The forward with sinks needs no read-back: it records.
    expect(encodeFlashAttention(q, k, v, { sinks }, c)).toBeDefined();
    expect(c.steps).toHaveLength(1);
    await c.run();
  });
});
