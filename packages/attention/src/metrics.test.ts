import { DTypeError, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import { accuracy, toleranceFor, withinTolerance } from './metrics.js';

const inf = Number.POSITIVE_INFINITY;

describe('accuracy', () => {
  test('hand-computed values', () => {
    // diff = [0, 0, 1]; ||ref||_2 = 3, ||ref||_1 = 5, act . ref = 11, ||act||_2 = sqrt(14)
    const a = accuracy([1, 2, 3], [1, 2, 2]);
    expect(a.relL2).toBeCloseTo(1 / 3, 15);
    expect(a.maxAbs).toBe(1);
    expect(a.relL1).toBeCloseTo(1 / 5, 15);
    expect(a.cosine).toBeCloseTo(11 / (3 * Math.sqrt(14)), 15);
    expect(a.nonFinite).toBe(0);
    const b = accuracy(Float32Array.from([-1, 0.5]), [1, -0.5]);
    expect(b.relL2).toBeCloseTo(2, 15);
    expect(b.cosine).toBeCloseTo(-1, 15);
    expect(b.maxAbs).toBe(2);
  });

  test('tensors of any float dtype and views are compared in logical order', () => {
    const ref = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3], 'f64');
    const act = Tensor.from([1, 4, 2, 5, 3, 6], [3, 2], 'f16').transpose(0, 1);
    expect(accuracy(act, ref)).toEqual({ relL2: 0, maxAbs: 0, cosine: 1, relL1: 0, nonFinite: 0 });
  });

  test('zero vectors', () => {
    expect(accuracy([0, 0], [0, 0])).toEqual({
      relL2: 0,
      maxAbs: 0,
      cosine: 1,
      relL1: 0,
      nonFinite: 0,
    });
    const z = accuracy([0, 1e-3], [0, 0]);
    expect(z.relL2).toBe(inf);
    expect(z.relL1).toBe(inf);
    expect(z.cosine).toBe(0);
    expect(z.maxAbs).toBe(1e-3);
  });

  test('infinities: same infinity is exact and left out, others counted', () => {
    const same = accuracy([-inf, 1, 2], [-inf, 1, 2.5]);
    expect(same.nonFinite).toBe(0);
    expect(same.relL2).toBeCloseTo(0.5 / Math.sqrt(1 + 6.25), 15);
    expect(accuracy([inf, 1], [-inf, 1]).nonFinite).toBe(1);
    expect(accuracy([0, 1], [-inf, 1]).nonFinite).toBe(1);
    const nan = accuracy([Number.NaN, inf, 3], [1, 2, 3]);
    expect(nan.nonFinite).toBe(2);
    expect(nan.relL2).toBe(0);
    expect(withinTolerance(nan, 1)).toBe(false);
    expect(accuracy([Number.NaN], [Number.NaN]).nonFinite).toBe(1);
  });

  test('size mismatch and bad arguments', () => {
    expect(() => accuracy([1, 2], [1, 2, 3])).toThrow(ShapeError);
    expect(() => accuracy([1, 2], [1, 2, 3])).toThrow(
      /^actual: expected 3 elements \(as reference\), got 2/,
    );
    expect(() => accuracy('12' as unknown as number[], [1, 2])).toThrow(ValueError);
    expect(() => accuracy([1], Tensor.from([1], [1], 'i32'))).toThrow(DTypeError);
  });
});

describe('toleranceFor / withinTolerance', () => {
  test('KERNELS.md values', () => {
    expect(toleranceFor({})).toBe(1e-5);
    expect(toleranceFor({ dtype: 'f32', maxSeqLen: 4095 })).toBe(1e-5);
    expect(toleranceFor({ dtype: 'f32', maxSeqLen: 4096 })).toBe(2e-5);
    expect(toleranceFor({ dtype: 'f32', chunked: true })).toBe(2e-5);
    expect(toleranceFor({ dtype: 'f16' })).toBe(2e-3);
    expect(toleranceFor({ dtype: 'bf16', maxSeqLen: 8192 })).toBe(1e-2);
  });

  test('bad options name the argument', () => {
    expect(() => toleranceFor({ dtype: 'f64' as 'f32' })).toThrow(
      /^dtype: expected "f32", "f16" or "bf16", got "f64"/,
    );
    expect(() => toleranceFor({ maxSeqLen: -1 })).toThrow(/^maxSeqLen: /);
    expect(() => withinTolerance(accuracy([1], [1]), Number.NaN)).toThrow(/^tol: /);
    expect(() => withinTolerance({} as never, 1)).toThrow(ValueError);
  });

  test('relL2 <= tol and no non-finite values', () => {
    const a = accuracy([1, 2, 3.00001], [1, 2, 3]);
    expect(withinTolerance(a, 1e-5)).toBe(true);
    expect(withinTolerance(a, 1e-6)).toBe(false);
    expect(withinTolerance(accuracy([-inf, 1], [-inf, 1]), 0)).toBe(true);
  });
});
