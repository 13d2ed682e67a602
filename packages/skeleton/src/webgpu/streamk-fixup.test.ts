import { accuracy, moddedAttentionReference, resolveAttentionProblem } from '@attnkit/attention';
import { Rng, type Tensor } from '@attnkit/tensor';
import { expectClose, webGpuTestContext } from '@attnkit/testing';
import { toWebGpu } from '@attnkit/webgpu';
import { afterAll, describe, expect, test, vi } from 'vitest';
import type { TiledHooks } from '../hooks.js';
import { buildAux, buildStreamK } from './aux.js';
import { tiledForwardWebGpu, type WebGpuTileOptions } from './host.js';

/**
 * The WGSL stream-K fix-up is what makes the pieces one answer: with a fix-up that merges only
 * the first piece of each unit (the generated combine's piece loop cut to one), the stream-K
 * forward must be far from the float64 reference while band (no fix-up) still matches it.
 * Guards against a fix-up that is skipped or reads too few slots (the comparison tests in
 * streamk.test.ts would also fail; this says why). combineShader is wrapped for this file only.
 */
vi.mock('./shaders.js', async (importOriginal) => {
  const mod = await importOriginal<typeof import('./shaders.js')>();
  return {
    ...mod,
    combineShader: (spec: Parameters<typeof mod.combineShader>[0]) => {
      const k = mod.combineShader(spec);
      if (spec.schedule !== 'streamK') return k;
      const code = k.code.replaceAll('s < n;', 's < min(n, 1u);');
      if (code === k.code) throw new Error('the fix-up piece loop was not found');
      return { ...k, code };
    },
  };
});

const ctx = await webGpuTestContext();
afterAll(() => ctx?.destroy());

const SMALL: WebGpuTileOptions['tiles'] = { forward: { tx: 4, ty: 2, rv: 1, cu: 1, kc: 8, mc: 8 } };

describe.skipIf(!ctx)('WGSL stream-K without its fix-up merge', () => {
  test('is wrong, and band is not', async () => {
    const rng = new Rng(99);
    const q = rng.randn([1, 8, 1, 16]);
    const k = rng.randn([1, 2, 203, 16]);
    const v = rng.randn([1, 2, 203, 16]);
    const want = moddedAttentionReference(q, k, v, {});
    const [gq, gk, gv] = [q, k, v].map((t) => toWebGpu(t, ctx!)) as Tensor[];
    const p = resolveAttentionProblem(gq!, gk!, gv!);
    // 8 units of 13 tiles over 5 workers: units cut in two lose a piece without the merge.
    const tiling = { tileQ: 8, tileK: 16 };
    const plan = buildStreamK(p, buildAux(p, tiling), tiling, 5);
    expect(plan.unitTiles).toEqual(Array(8).fill(13));
    expect(plan.values.splits).toBe(2);
    const hooks: TiledHooks = { normalize: { kind: 'softmax' }, scoreMods: [] };
    const band = await tiledForwardWebGpu(p, hooks, gq!, gk!, gv!, { tiles: SMALL });
    expectClose(await band.o.toCpu(), want.o, 1e-5, 'band o');
    const sk = await tiledForwardWebGpu(
      p,
      { ...hooks, schedule: { kind: 'streamK', workers: 5 } },
      gq!,
      gk!,
      gv!,
      { tiles: SMALL },
    );
    expect(accuracy(await sk.o.toCpu(), want.o).relL2).toBeGreaterThan(1e-2);
    expect(accuracy(await sk.lse!.toCpu(), want.lse!).relL2).toBeGreaterThan(1e-3);
    for (const t of [gq, gk, gv, band.o, band.lse, sk.o, sk.lse]) t?.dispose();
  });
});
