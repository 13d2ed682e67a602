import { basename } from 'node:path';
import { accuracy, goldenGlaOptions, loadGolden, toleranceFor } from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import { webGpuTestContext } from '@attnkit/testing';
import { goldenFiles, goldenLabel } from '@attnkit/vitest-config';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test } from 'vitest';
import { chunkGla, chunkGlaBackward } from '../../index.js';

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
    test.each([64, 16])('chunk C %d: o, ht, dq, dk, dv, dgk, dh0', async (C) => {
      const g = await loadGolden(file);
      const t = g.tensors;
      const made: Tensor[] = [];
      const up = (x: Tensor) => {
        const u = toWebGpu(x, ctx!);
        made.push(u);
        return u;
      };
      const base = goldenGlaOptions(g) as Record<string, unknown>;
      const options = {
        ...base,
        ...(base.initialState ? { initialState: up(base.initialState as Tensor) } : {}),
        chunkSize: C,
        backend: 'webgpu',
      };
      const [q, k, v, gk] = [t.q!, t.k!, t.v!, t.gk!].map(up) as [Tensor, Tensor, Tensor, Tensor];
      const r = await chunkGla(q, k, v, gk, options);
      const grads = await chunkGlaBackward(q, k, v, gk, up(t.do!), {
        ...options,
        ...(t.dht ? { dht: up(t.dht) } : {}),
      });
      const produced: Record<string, Tensor | undefined> = { o: r.o, ht: r.finalState, ...grads };
      const tol = toleranceFor({ dtype: 'f32', chunked: true });
      expect(g.references.sort()).toEqual(['dgk', 'dh0', 'dk', 'dq', 'dv', 'ht', 'o']);
      for (const name of g.references) {
        const got = produced[name];
        expect(got?.device, name).toBe('webgpu');
        const acc = accuracy(await got!.toCpu(), t[name]!);
        expect(acc.nonFinite, name).toBe(0);
        expect(acc.relL2, `${name} of ${basename(file)}`).toBeLessThan(tol);
      }
      for (const x of [...made, ...Object.values(produced)]) x?.dispose();
    });
  });
});
