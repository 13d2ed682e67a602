import { Rng } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { PipelineTimeoutError, toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { flashAttentionWebGpu } from '../index.js';

// A kernel whose pipeline does not compile in time is a typed error naming the kernel and its
// tile config (issue 20 item 4). Dawn's GL backend compiles before its promise returns, so the
// hang is injected: this context's createComputePipelineAsync never settles.
const ctx = await webGpuTestContext({ pipelineTimeoutMs: 50 });
if (ctx) {
  (ctx.device as { createComputePipelineAsync: unknown }).createComputePipelineAsync = () =>
    new Promise(() => {});
}
afterAll(() => ctx?.destroy());

describe.skipIf(ctx === undefined)('pipeline time limit', () => {
  test('the forward names its kernel and tile plan', async () => {
    const rng = new Rng(3);
    const [q, k, v] = [
      rng.randn([1, 2, 33, 16]),
      rng.randn([1, 2, 35, 16]),
      rng.randn([1, 2, 35, 16]),
    ].map((t) => toWebGpu(t, ctx!));
    const err = await flashAttentionWebGpu(q!, k!, v!, { causal: true }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PipelineTimeoutError);
    expect(String((err as Error).message)).toMatch(/flash-attention forward/);
    expect(String((err as Error).message)).toMatch(/br=\d+/);
  });
});
