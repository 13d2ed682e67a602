import {
  alibi,
  resolveAttentionProblem,
  resolveScoreMods,
  scoreBias,
  softcap,
} from '@attnkit/attention';
import { Rng, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { type BiasGradMod, biasGradLayout, biasGradMod, reduceBiasGrad } from './hooks.js';
import { hookResources } from './webgpu/hooks.js';
import { planWebGpuFlash } from './webgpu/plan.js';
import { dkdvShader, dqShader, forwardShader } from './webgpu/shaders.js';

// The skeleton's bias gradient plumbing without a kernel run (the families' tests run it on
// every backend): which mod asks for it, where each backend writes dS, the broadcast reduction,
// and that only the dQ pass of a backward with it declares the dbias binding.

const rng = new Rng(7);
const q = rng.randn([2, 3, 5, 8]);
const p = resolveAttentionProblem(q, q, q);
const mods = (m: Parameters<typeof resolveScoreMods>[0]) => resolveScoreMods(m, p, 'cpu');

describe('biasGradMod', () => {
  test('finds the bias with grad after additive mods only', () => {
    const b = rng.randn([3, 5, 5]);
    expect(biasGradMod(mods([scoreBias(b)]))).toBeUndefined();
    const r = biasGradMod(mods([alibi([1, 2, 3]), scoreBias(b), scoreBias(b, { grad: true })]));
    expect(r?.index).toBe(2);
    expect(r?.mod.headStride).toBe(25);
    // After it, any mod (its derivative joins dS).
    expect(biasGradMod(mods([scoreBias(b, { grad: true }), softcap(2)]))?.index).toBe(0);
  });
  test('a non-additive mod before it, or two with grad: ValueError naming scoreMod[n].grad', () => {
    const b = rng.randn([5, 5]);
    for (const list of [
      [softcap(2), scoreBias(b, { grad: true })],
      [scoreBias(b, { grad: true }), scoreBias(b, { grad: true })],
    ]) {
      expect(() => biasGradMod(mods(list))).toThrow(ValueError);
      expect(() => biasGradMod(mods(list))).toThrow(
        expect.objectContaining({ argument: 'scoreMod[1].grad' }),
      );
    }
  });
});

describe('biasGradLayout / reduceBiasGrad', () => {
  const grad = (shape: number[]) =>
    biasGradMod(mods(scoreBias(rng.randn(shape), { grad: true })))!.mod as BiasGradMod;
  test('a full bias is written in place; shared ones get one plane per (b, h)', () => {
    expect(biasGradLayout(p, grad([2, 3, 5, 5]))).toEqual({
      batchStride: 75,
      headStride: 25,
      direct: true,
      size: 150,
    });
    expect(biasGradLayout(p, grad([3, 5, 5]))).toMatchObject({ direct: false, size: 150 });
    expect(biasGradLayout(p, grad([5, 5]))).toMatchObject({
      batchStride: 75,
      headStride: 25,
      direct: false,
    });
    // One batch entry and a per-head bias: nothing is shared, in place.
    const p1 = { batch: 1, hq: 3 };
    expect(biasGradLayout(p1, grad([3, 5, 5])).direct).toBe(true);
  });
  test('reduceBiasGrad sums the planes over the broadcast dims', () => {
    const m = grad([3, 5, 5]); // shared over the batch
    const full = Float32Array.from({ length: 150 }, (_, e) => e);
    const out = reduceBiasGrad(p, m, full, new Float32Array(75).fill(Number.NaN));
    for (let e = 0; e < 75; e++) expect(out[e]).toBe(e + (75 + e));
    const shared = grad([5, 5]);
    const all = reduceBiasGrad(p, shared, full, new Float32Array(25));
    expect(all[3]).toBe([0, 1, 2, 3, 4, 5].reduce((s, n) => s + n * 25 + 3, 0));
  });
});

describe('WGSL: the dbias store', () => {
  const plan = (kernel: 'forward' | 'dq' | 'dkdv') =>
    planWebGpuFlash({
      kernel,
      d: 8,
      dv: 8,
      maxComputeWorkgroupStorageSize: 16384,
      maxComputeInvocationsPerWorkgroup: 256,
    });
  const spec = (kernel: 'forward' | 'dq' | 'dkdv', pass: 'forward' | 'backward', grad: boolean) => {
    const bias = Tensor.from(new Float32Array(25), [5, 5]);
    const r = hookResources(
      { normalize: { kind: 'softmax' }, scoreMods: mods(scoreBias(bias, { grad })) },
      undefined,
      pass,
      p,
    );
    return {
      plan: plan(kernel),
      dtype: 'f32' as const,
      vecD: true,
      vecV: true,
      blockSparse: false,
      hooks: r.hooks,
      values: r.values,
    };
  };
  test('only the dQ pass of a backward with grad declares and writes dbias', () => {
    const dq = dqShader(spec('dq', 'backward', true));
    expect(dq.bindings.map((b) => b.name)).toContain('dbias');
    expect(dq.code).toContain('dbias[b * P.dbBatch + h * P.dbHead + row * P.dbRow + col]');
    const dkdv = dkdvShader(spec('dkdv', 'backward', true));
    expect(dkdv.bindings.map((b) => b.name)).not.toContain('dbias');
    expect(forwardShader(spec('forward', 'forward', true)).code).not.toContain('dbias');
    // Without grad the kernels are those of a plain bias mod.
    const plain = dqShader(spec('dq', 'backward', false));
    expect(plain.code).not.toContain('dbias');
    expect(spec('dq', 'backward', false).hooks.dbias).toBeUndefined();
    // Strides of a bias shared over (b, h): one plane per (b, h).
    expect(spec('dq', 'backward', true).values).toMatchObject({
      dbBatch: 75,
      dbHead: 25,
      dbRow: 5,
    });
  });
});
