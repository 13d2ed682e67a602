import { join } from 'node:path';
import { goldenAttentionOptions, loadGolden, toleranceFor } from '@attnkit/attention';
import { checkOnWebGpu, webGpuTestContext } from '@attnkit/testing';
import { goldenNames, goldenSets } from '@attnkit/vitest-config';
import { afterAll, describe, expect, test } from 'vitest';

// Fails here when no adapter can be had (Dawn on Mesa llvmpipe in CI), unless
// ATTNKIT_ALLOW_NO_WEBGPU=1 declares a machine without WebGPU.
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

// Every golden set: the project's goldens/ and, when present, ../shared/goldens.
for (const { name: setName, dir: GOLDENS } of goldenSets()) {
  const files = goldenNames('softmax', GOLDENS);

  describe.skipIf(!ctx)(`WGSL FlashAttention-2 on WebGPU: PyTorch goldens (${setName})`, () => {
    test('every softmax golden is here', () => {
      expect(files.length).toBe(11);
    });

    test.each(files)('golden %s: forward and backward', async (file) => {
      const g = await loadGolden(join(GOLDENS, file));
      const t = g.tensors;
      const tol = toleranceFor({
        dtype: 'f32',
        maxSeqLen: Math.max(t.q!.shape.at(-2)!, t.k!.shape.at(-2)!),
      });
      await checkOnWebGpu(
        ctx!,
        { q: t.q!, k: t.k!, v: t.v!, dO: g.hasBackward ? t.do : undefined },
        goldenAttentionOptions(g),
        tol,
        file,
        { o: t.o!, lse: t.lse, dq: t.dq, dk: t.dk, dv: t.dv },
      );
    });
  });
}
