import { describe, expect, test } from 'vitest';
import { pointwiseWeights } from './scores.js';

// The TS skeleton's pointwise weights (sigmoid, silu) on a row range, forward and with the
// backward's chain factor: values, derivatives (against central differences in float64), and
// the masked / NaN entries.
const silu = (x: number) => x / (1 + Math.exp(-x));

describe('pointwiseWeights', () => {
  test("silu: w = c silu(s), ds *= c silu'(s), over [from, to) only", () => {
    const xs = [-30, -4, -1, -0.25, 0, 0.3, 1, 5, 40];
    const c = 1 / 7;
    const s = Float32Array.from([9, ...xs, 9]);
    const ds = Float32Array.from([2, ...xs.map(() => 2), 2]);
    pointwiseWeights('silu', s, 1, 1 + xs.length, 0.5, c, ds);
    // Outside the range: untouched (and the sigmoid bias is not silu's).
    expect([s[0], s[s.length - 1], ds[0], ds[ds.length - 1]]).toEqual([9, 9, 2, 2]);
    xs.forEach((x, n) => {
      const xf = Math.fround(x);
      expect(s[n + 1]).toBeCloseTo(Math.fround(c * silu(xf)), 6);
      const h = 1e-6;
      const grad = (c * (silu(xf + h) - silu(xf - h))) / (2 * h);
      expect(Math.abs(ds[n + 1]! - 2 * grad)).toBeLessThan(1e-6 * Math.max(1, Math.abs(grad)));
    });
  });

  test('silu: a masked score (-inf) weighs 0 with derivative 0; NaN stays NaN; +inf stays +inf', () => {
    const s = Float32Array.of(Number.NEGATIVE_INFINITY, Number.NaN, Number.POSITIVE_INFINITY);
    const ds = Float32Array.of(1, 1, 1);
    pointwiseWeights('silu', s, 0, 3, 0, 0.5, ds);
    expect(s[0]).toBe(0);
    expect(ds[0]).toBe(0);
    expect(s[1]).toBeNaN();
    expect(ds[1]).toBeNaN();
    expect(s[2]).toBe(Number.POSITIVE_INFINITY);
  });

  test('sigmoid: w = sigmoid(s + bias), ds *= w (1 - w)', () => {
    const s = Float32Array.of(-2, 0, 3);
    const ds = Float32Array.of(1, 1, 1);
    pointwiseWeights('sigmoid', s, 0, 3, 0.5, 1, ds);
    [-2, 0, 3].forEach((x, n) => {
      const w = 1 / (1 + Math.exp(-(x + 0.5)));
      expect(s[n]).toBeCloseTo(w, 6);
      expect(ds[n]).toBeCloseTo(w * (1 - w), 6);
    });
  });
});
