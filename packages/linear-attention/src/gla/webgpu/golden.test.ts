import { toleranceFor } from '@attnkit/attention';
import { webGpuTestContext } from '@attnkit/testing';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { afterAll, describe, expect, test } from 'vitest';
import { chunkGla, chunkGlaBackward } from '../../index.js';
import { checkGlaGoldenWebGpu } from './golden-check.js';

/**
 * The gla goldens (fla's naive recurrent GLA: h0, final state, every gradient; the project's set
 * and ../shared/goldens) through chunkGla / chunkGlaBackward on webgpu tensors, C 64 and 16,
 * every tensor within KERNELS.md's chunked-GLA f32 bound, on NaN-poisoned outputs.
 */
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());
const files = goldenFiles('gla');

describe.skipIf(!ctx)('gla goldens on webgpu', () => {
  test('golden files exist', () => expect(files.length).toBeGreaterThanOrEqual(2));
  describe.each(files.map((f) => [goldenLabel(f), f]))('%s', (_label, file) => {
    test.each([64, 16])('chunk C %d: o, ht, dq, dk, dv, dgk, dh0', (C) =>
      checkGlaGoldenWebGpu(ctx!, file, chunkGla, chunkGlaBackward, {
        extra: { chunkSize: C },
        tol: () => toleranceFor({ dtype: 'f32', chunked: true }),
      }),
    );
  });
});
