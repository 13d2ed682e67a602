import { Rng } from '@attnkit/tensor';
import { describe, expect, it } from 'vitest';
import { blockRun, sampleKeys, samplingWeight } from './index.js';

describe('sampleKeys', () => {
  it('draws sorted indices in [0, numKeys), deterministic for a seed', () => {
    const a = sampleKeys(37, 500, new Rng(1));
    expect(a.length).toBe(500);
    for (let i = 0; i < a.length; i++) {
      expect(a[i]! >= 0 && a[i]! < 37).toBe(true);
      if (i) expect(a[i - 1]! <= a[i]!).toBe(true);
    }
    expect(sampleKeys(37, 500, new Rng(1))).toEqual(a);
    expect(sampleKeys(37, 500, new Rng(2))).not.toEqual(a);
    expect(sampleKeys(5, 0, new Rng(1)).length).toBe(0);
  });

  it('is uniform with replacement (chi-square over the keys)', () => {
    const n = 20;
    const draws = 40_000;
    const counts = new Float64Array(n);
    for (const s of sampleKeys(n, draws, new Rng(3))) counts[s]!++;
    const e = draws / n;
    const chi2 = counts.reduce((acc, c) => acc + (c - e) ** 2 / e, 0);
    // 19 degrees of freedom: P(chi2 > 43.8) = 0.001.
    expect(chi2).toBeLessThan(43.8);
  });

  it('with weight Nk / m and own-block draws dropped, estimates the residual sum without bias', () => {
    // x_j plays exp(S_ij) v_j; the query's own block [lo, hi) is computed exactly elsewhere.
    const nk = 64;
    const m = 8;
    const [lo, hi] = [16, 32];
    const rng = new Rng(4);
    const x = Float64Array.from({ length: nk }, (_, j) => (j >= lo && j < hi ? 50 : 1 + (j % 7)));
    let exact = 0;
    for (let j = 0; j < nk; j++) if (j < lo || j >= hi) exact += x[j]!;
    const trials = 20_000;
    let sum = 0;
    let sum2 = 0;
    let biased = 0;
    for (let t = 0; t < trials; t++) {
      const s = sampleKeys(nk, m, rng);
      const [r0, r1] = blockRun(s, lo, hi);
      let est = 0;
      for (let i = 0; i < s.length; i++) if (i < r0 || i >= r1) est += x[s[i]!]!;
      sum += est * samplingWeight(nk, m);
      sum2 += (est * samplingWeight(nk, m)) ** 2;
      // The tempting alternative, weight (Nk - block) / m, is biased by (Nk - block) / Nk.
      biased += (est * (nk - (hi - lo))) / m;
    }
    const mean = sum / trials;
    const se = Math.sqrt((sum2 / trials - mean ** 2) / trials);
    expect(Math.abs(mean - exact)).toBeLessThan(4 * se);
    expect(Math.abs(biased / trials - exact)).toBeGreaterThan(20 * se);
  });

  it('blockRun finds the draws of a key block', () => {
    const s = Int32Array.from([0, 2, 2, 5, 7, 7, 9]);
    expect(blockRun(s, 2, 7)).toEqual([1, 4]);
    expect(blockRun(s, 0, 1)).toEqual([0, 1]);
    expect(blockRun(s, 10, 12)).toEqual([7, 7]);
    expect(blockRun(s, 3, 5)).toEqual([3, 3]);
  });

  it('rejects bad arguments with typed errors', () => {
    const err = (arg: string) => expect.objectContaining({ name: 'ValueError', argument: arg });
    expect(() => sampleKeys(0, 3, new Rng())).toThrow(err('numKeys'));
    expect(() => sampleKeys(4, -1, new Rng())).toThrow(err('sampleSize'));
    expect(() => sampleKeys(4, 1.5, new Rng())).toThrow(err('sampleSize'));
    expect(() => sampleKeys(4, 2, {} as Rng)).toThrow(err('rng'));
    expect(() => samplingWeight(4, 0)).toThrow(err('sampleSize'));
  });
});
