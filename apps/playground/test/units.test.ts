import { accuracy, allowed, resolveAttentionProblem } from '@attnkit/attention';
import { Rng } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { FAMILIES, type FamilyId, type RunSpec, sageRule, timedKernel } from '../src/families.js';
import { benchSvg } from '../src/panels/bench.js';
import { computeMap } from '../src/panels/map.js';

/** The playground's pure pieces, in Node (the browser paths are in e2e.test.ts). */

describe('families (ts backend, in Node)', () => {
  test.for(Object.keys(FAMILIES) as FamilyId[])(
    '%s: the ts kernel against its float64 reference passes its rule; shapes as documented',
    async (family) => {
      const f = FAMILIES[family];
      // Odd sizes, a random seed: nothing tuned to one input.
      const seed = Math.floor(Math.random() * 2 ** 31);
      const spec: RunSpec = {
        family,
        shape: { B: 2, H: 3, N: family === 'hyper' ? 37 : 53, D: 16 },
        causal: true,
        backend: 'ts',
        seed,
      };
      const x = f.inputs(spec);
      const { o } = await timedKernel(f, x, spec, undefined);
      const ref = f.reference(x, spec);
      expect(o.shape).toEqual(ref.shape);
      const acc = accuracy(o, ref);
      const verdict = f.judge(acc, spec);
      // HyperAttention: causal squares of side <= minSeqLen (here all of N 37) are exact.
      expect(
        verdict.pass,
        `${family} seed ${seed}: ${JSON.stringify(acc)} vs ${verdict.rule}`,
      ).toBe(true);
      if (family === 'gla') {
        expect(x.gk!.shape).toEqual([2, 53, 3, 16]);
        const g = x.gk!.toFloat32Array();
        expect(g.every((v) => Number.isFinite(v) && v <= 0)).toBe(true);
      }
      if (family === 'hstu') expect(x.q.shape).toEqual([2 * 53, 3, 16]);
      expect(f.flops(spec)).toBeGreaterThan(0);
    },
  );

  test('the f32 rule follows toleranceFor (2e-5 from N 4096, and for chunked GLA)', () => {
    const acc = accuracy([1 + 1.5e-5], [1]);
    const spec = (family: FamilyId, N: number): RunSpec => ({
      family,
      shape: { B: 1, H: 1, N, D: 16 },
      causal: false,
      backend: 'ts',
      seed: 0,
    });
    expect(FAMILIES.flash.judge(acc, spec('flash', 4095)).pass).toBe(false);
    expect(FAMILIES.flash.judge(acc, spec('flash', 4096)).pass).toBe(true);
    expect(FAMILIES.gla.judge(acc, spec('gla', 64)).pass).toBe(true);
    expect(FAMILIES.flash.judge(accuracy([Number.NaN], [1]), spec('flash', 1)).pass).toBe(false);
  });

  test("Sage's KERNELS.md rule: INT8 cosine and relL1, INT4 cosine", () => {
    const acc = (cosine: number, relL1: number) => ({
      cosine,
      relL1,
      relL2: 0,
      maxAbs: 0,
      nonFinite: 0,
    });
    expect(sageRule(acc(0.9995, 0.02), 8).pass).toBe(true);
    expect(sageRule(acc(0.9985, 0.02), 8).pass).toBe(false);
    expect(sageRule(acc(0.9995, 0.04), 8).pass).toBe(false);
    expect(sageRule(acc(0.995, 0.5), 4).pass).toBe(true);
    expect(sageRule(acc(0.985, 0), 4).pass).toBe(false);
  });
});

describe('attention map', () => {
  test('masked pairs are exactly those allowed() rejects; softmax rows sum to 1', () => {
    const n = 45;
    const m = computeMap('softmax', n, 8, true, 9, true, 5);
    const rng = new Rng(0);
    const q = rng.randn([1, 1, n, 8]);
    const p = resolveAttentionProblem(q, q, q, { causal: true, window: [9, -1] });
    let masked = 0;
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (let j = 0; j < n; j++) {
        const w = m.p[i * n + j]!;
        if (Number.isNaN(w)) masked++;
        else sum += w;
        // The block mask only removes more: whatever causal + window rejects is masked.
        if (!allowed(p, 0, 0, i, j)) expect(Number.isNaN(w)).toBe(true);
      }
      // The diagonal block is always kept, so every row has a key.
      expect(sum).toBeCloseTo(1, 12);
    }
    // causal + window 9 keep sum_i min(i, 9) + 1 pairs; the blocks drop some of the rest.
    const band = Array.from({ length: n }, (_, i) => Math.min(i, 9) + 1).reduce((a, b) => a + b);
    expect(masked).toBeGreaterThanOrEqual(n * n - band);
  });

  test('gla is causal whatever the checkbox; sigmoid weights lie in (0, 1)', () => {
    const g = computeMap('gla', 20, 4, false, -1, false, 1);
    for (let i = 0; i < 20; i++) {
      for (let j = 0; j < 20; j++) expect(Number.isNaN(g.p[i * 20 + j]!)).toBe(j > i);
    }
    const s = computeMap('sigmoid', 20, 4, false, -1, false, 1);
    expect([...s.p].every((w) => w > 0 && w < 1)).toBe(true);
  });
});

describe('bench chart', () => {
  test('a bar per row, errors labelled, names escaped', () => {
    const svg = benchSvg([
      { family: 'flash', backend: 'webgpu', ms: 2, gflops: 10 },
      { family: 'flash', backend: 'ts', ms: 20, gflops: 1 },
      { family: 'gla', backend: 'ts', ms: Number.NaN, gflops: Number.NaN, error: 'x<y' },
    ]);
    expect(svg.startsWith('<svg')).toBe(true);
    // 3 bars + 2 legend swatches.
    expect(svg.match(/<rect /g)).toHaveLength(5);
    expect(svg).toContain('>error<');
    expect(svg).not.toContain('x<y');
    expect(svg).toContain('>10.0<');
  });
});
