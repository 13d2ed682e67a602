import { UnsupportedError } from '@attnkit/attention';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
} from '../../index.js';

/**
 * What the WebGPU GLA backend refuses: bad gates (the GPU's gate check, read back, gives the
 * same ValueError as the cpu backends, with the element's index) in both forms, the chunk sizes
 * it declines (UnsupportedError with its reason), the chunk form's options on the recurrent
 * form. Its outputs leave no buffer behind.
 */
const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

describe.skipIf(!ctx)('gla on webgpu: typed errors', () => {
  const rng = new Rng(7);
  const [B, T, H, K, V] = [1, 21, 2, 8, 4];
  const up = (t: Tensor) => toWebGpu(t, ctx!);
  const q = rng.randn([B, T, H, K]);
  const k = rng.randn([B, T, H, K]);
  const v = rng.randn([B, T, H, V]);
  const gates = (value?: number) => {
    const g = new Float32Array(B * T * H * K).fill(-0.3);
    if (value !== undefined) g[5 * H * K + K + 3] = value;
    return up(Tensor.from(g, [B, T, H, K]));
  };

  test.each([
    ['above 0', 0.5],
    ['NaN', Number.NaN],
    ['-Infinity', Number.NEGATIVE_INFINITY],
  ])(
    'a gate %s: ValueError naming gk at [0, 5, 1, 3], forward and backward',
    async (_n, value) => {
      const live = ctx!.liveBuffers;
      const g = gates(value);
      const args = [up(q), up(k), up(v), g] as const;
      await expect(chunkGla(...args)).rejects.toThrow(ValueError);
      await expect(chunkGla(...args)).rejects.toMatchObject({ argument: 'gk' });
      await expect(chunkGla(...args)).rejects.toThrow(/at \[0, 5, 1, 3\]/);
      await expect(chunkGlaBackward(...args, up(rng.randn([B, T, H, V])))).rejects.toMatchObject({
        argument: 'gk',
      });
      for (const t of args) t.dispose();
      // The inputs made here (4 + dO) are disposed or were collected: no output or temp is left.
      expect(ctx!.liveBuffers).toBeLessThanOrEqual(live + 1);
    },
    120_000,
  );

  test.each([
    ['above 0', 0.5],
    ['NaN', Number.NaN],
    ['-Infinity', Number.NEGATIVE_INFINITY],
  ])(
    'recurrent form, a gate %s: ValueError naming gk at [0, 5, 1, 3], forward and backward',
    async (_n, value) => {
      const live = ctx!.liveBuffers;
      const g = gates(value);
      const args = [up(q), up(k), up(v), g] as const;
      await expect(fusedRecurrentGla(...args)).rejects.toThrow(ValueError);
      await expect(fusedRecurrentGla(...args, { reverse: true })).rejects.toThrow(
        /at \[0, 5, 1, 3\]/,
      );
      const dO = up(rng.randn([B, T, H, V]));
      await expect(fusedRecurrentGlaBackward(...args, dO)).rejects.toMatchObject({
        argument: 'gk',
      });
      for (const t of [...args, dO]) t.dispose();
      expect(ctx!.liveBuffers).toBeLessThanOrEqual(live);
    },
    120_000,
  );

  test('the recurrent form refuses the chunk form options', async () => {
    const args = [up(q), up(k), up(v), gates()] as const;
    const opts = { backend: 'webgpu', tensorCores: true } as unknown as Record<string, unknown>;
    await expect(fusedRecurrentGla(...args, opts)).rejects.toMatchObject({
      argument: 'options.tensorCores',
    });
    await expect(
      fusedRecurrentGla(...args, { chunkSize: 16 } as unknown as Record<string, unknown>),
    ).rejects.toMatchObject({ argument: 'chunkSize' });
    for (const t of args) t.dispose();
  });

  test('declines chunk sizes outside 16..128, with reasons', async () => {
    const args = [up(q), up(k), up(v), gates()] as const;
    await expect(chunkGla(...args, { chunkSize: 8, backend: 'webgpu' })).rejects.toThrow(
      UnsupportedError,
    );
    await expect(chunkGla(...args, { chunkSize: 256 })).rejects.toThrow(
      /chunk sizes 16, 32, 64, 128/,
    );
    for (const t of args) t.dispose();
  });
});
