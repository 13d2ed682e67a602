import { hstuTimeBucket } from '@attnkit/attention';
import { Rng, ShapeError, ValueError } from '@attnkit/tensor';
import { describe, expect, test } from 'vitest';
import {
  hstuPositionColumn,
  hstuRabTimes,
  hstuTimeColumn,
  hstuTimeThresholds,
} from './hstu-rab.js';

describe('HSTU bucketed rab planning (pure)', () => {
  for (const [fn, divisor, T] of [
    ['log', 0.301, 129],
    ['log', 0.301, 20],
    ['sqrt', 1, 64],
    ['sqrt', 3.5, 1000],
    ['log', 0.05, 300],
  ] as const) {
    test(`thresholds give the float64 reference's bucket: ${fn} / ${divisor}, T ${T}`, () => {
      const thr = hstuTimeThresholds(T, fn, divisor);
      expect(thr[0]).toBe(0);
      expect(thr.length).toBeLessThanOrEqual(T);
      for (let t = 1; t < thr.length; t++) expect(thr[t]!).toBeGreaterThanOrEqual(thr[t - 1]!);
      const rng = new Rng(7);
      const probe: number[] = [0, 1, 2, 3, 0x7fffffff, 0x7ffffffe];
      // Every boundary and its neighbours, plus random magnitudes across the int32 range.
      for (const x of thr) if (x < 0x7fffffff) probe.push(x - 1, x, x + 1);
      for (let n = 0; n < 3000; n++) probe.push(Math.floor(2 ** (31 * rng.uniform())) - 1);
      for (const a of probe) {
        if (a < 0 || a > 0x7fffffff) continue;
        expect(hstuTimeColumn(thr, a), `|dt| ${a}`).toBe(hstuTimeBucket(a, T, fn, divisor));
        expect(hstuTimeColumn(thr, a), `dt -${a}`).toBe(hstuTimeBucket(-a, T, fn, divisor));
      }
    });
  }

  test('position column: j - i + R clamped', () => {
    expect(hstuPositionColumn(5, 5, 9)).toBe(4);
    expect(hstuPositionColumn(5, 0, 9)).toBe(0);
    expect(hstuPositionColumn(0, 3, 9)).toBe(7);
    expect(hstuPositionColumn(0, 30, 9)).toBe(8);
  });

  test('times: rebased per sequence, next token, last keeps its own', () => {
    const offsets = Int32Array.of(0, 3, 3, 5);
    const { keyTime, nextTime } = hstuRabTimes(offsets, [100, 140, 200, 7, 9]);
    expect([...keyTime]).toEqual([0, 40, 100, 0, 2]);
    expect([...nextTime]).toEqual([40, 100, 100, 2, 2]);
  });

  test('typed errors name the argument', () => {
    expect(() => hstuTimeThresholds(0)).toThrow(/^numTime: expected a positive integer/);
    expect(() => hstuTimeThresholds(4, 'exp' as 'log')).toThrow(ValueError);
    expect(() => hstuTimeThresholds(4, 'log', -1)).toThrow(/^bucketDivisor/);
    const o = Int32Array.of(0, 2);
    expect(() => hstuRabTimes(o, [1, 2, 3])).toThrow(ShapeError);
    expect(() => hstuRabTimes(o, [1, 2.5])).toThrow(
      /^bucketedRab\.timestamps: expected integer timestamps .* got 2\.5 at 1/,
    );
    expect(() => hstuRabTimes(o, [0, 2 ** 32])).toThrow(/span less than 2\^31/);
  });
});
