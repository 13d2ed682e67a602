import { accuracy, softmaxAttentionReference, toleranceFor } from '@attnkit/attention';
import { Rng, ValueError } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { flashAttention, flashAttentionBackward } from '../index.js';

// The tensor-core option through the family API (issue 20): accepted as an option (not an
// unknown one), a ValueError naming tensorCores on an adapter without subgroup matrices, the
// SIMT kernels with false, and the emulated tensor-core kernels (plain WGSL, llvmpipe) right
// against float64 through flashAttention. The real kernels are verified on the device
// (benchmarks/gpu/h200-tc.sh).
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

describe.skipIf(ctx === undefined)('flashAttention tensorCores option', () => {
  const rng = new Rng(11);
  const host = [
    rng.randn([1, 2, 37, 16]),
    rng.randn([1, 1, 29, 16]),
    rng.randn([1, 1, 29, 16]),
  ].map((t) => t.astype('f16'));
  test('true on an adapter without subgroup matrices is a ValueError naming tensorCores', async () => {
    const [q, k, v] = host.map((t) => toWebGpu(t, ctx!));
    if (ctx!.features.subgroupMatrixConfigs.length > 0) return;
    const err = await flashAttention(q!, k!, v!, { tensorCores: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ValueError);
    expect((err as ValueError).argument).toBe('tensorCores');
    const f = await flashAttention(q!, k!, v!, { tensorCores: false });
    const bwd = await flashAttentionBackward(q!, k!, v!, f.o, f.lse, f.o, {
      tensorCores: true,
    }).catch((e: unknown) => e);
    expect(bwd).toBeInstanceOf(ValueError);
    expect((bwd as ValueError).argument).toBe('tensorCores');
  });
  test('false and emulate both match float64 (causal GQA, Nq != Nk)', async () => {
    const [q, k, v] = host.map((t) => toWebGpu(t, ctx!));
    const ref = softmaxAttentionReference(host[0]!, host[1]!, host[2]!, { causal: true });
    const tol = toleranceFor({ dtype: 'f16' });
    for (const tensorCores of [false, { emulate: true, subgroups: 1, keyMatrices: 1 }] as const) {
      const { o, lse } = await flashAttention(q!, k!, v!, { causal: true, tensorCores });
      expect(accuracy(await o.toCpu(), ref.o).relL2).toBeLessThanOrEqual(tol);
      expect(accuracy(await lse!.toCpu(), ref.lse!).relL2).toBeLessThanOrEqual(tol);
    }
  });
});
