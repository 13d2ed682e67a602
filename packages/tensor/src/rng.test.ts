import { describe, expect, test } from 'vitest';
import { DTypeError, ShapeError, ValueError } from './errors.js';
import { bf16ToBits, bitsToBf16, bitsToF16, f16ToBits } from './half.js';
import { Rng } from './rng.js';

// ---- an independent reference (BigInt, straight from the published C code) -------------------

const M32 = 0xffffffffn;
const rotl = (x: bigint, k: bigint) => ((x << k) | (x >> (32n - k))) & M32;

function xoshiro128ss(state: bigint[]): () => bigint {
  const s = [...state];
  return () => {
    const result = (rotl((s[1]! * 5n) & M32, 7n) * 9n) & M32;
    const t = (s[1]! << 9n) & M32;
    s[2]! ^= s[0]!;
    s[3]! ^= s[1]!;
    s[1]! ^= s[2]!;
    s[0]! ^= s[3]!;
    s[2]! ^= t;
    s[3] = rotl(s[3]!, 11n);
    return result;
  };
}

/** splitmix32 stream from a 32-bit start value, as Rng seeds itself. */
function splitmix32(start: bigint): () => bigint {
  let x = start & M32;
  return () => {
    x = (x + 0x9e3779b9n) & M32;
    let z = x;
    z = ((z ^ (z >> 16n)) * 0x21f0aaadn) & M32;
    z = ((z ^ (z >> 15n)) * 0x735a2d97n) & M32;
    return z ^ (z >> 15n);
  };
}

function referenceUniforms(seed: number, count: number): number[] {
  const lo = BigInt(seed >>> 0);
  const hi = BigInt(Math.floor(seed / 2 ** 32) >>> 0);
  const sm = splitmix32(lo ^ ((hi * 0x85ebca6bn) & M32));
  const next = xoshiro128ss([sm(), sm(), sm(), sm()]);
  return Array.from({ length: count }, () => {
    const a = Number(next() >> 5n);
    const b = Number(next() >> 6n);
    return (a * 2 ** 26 + b) / 2 ** 53;
  });
}

function moments(xs: ArrayLike<number>): { mean: number; variance: number } {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  const mean = s / xs.length;
  let v = 0;
  for (let i = 0; i < xs.length; i++) v += (xs[i]! - mean) ** 2;
  return { mean, variance: v / (xs.length - 1) };
}

describe('algorithm', () => {
  test('the reference xoshiro128** matches the published vector for state {1, 2, 3, 4}', () => {
    const next = xoshiro128ss([1n, 2n, 3n, 4n]);
    expect([next(), next()]).toEqual([11520n, 0n]);
  });

  test.each([0, 1, 42, -7, 2 ** 32, 2 ** 40 + 5, Number.MAX_SAFE_INTEGER])(
    'seed %d reproduces the reference stream',
    (seed) => {
      const rng = new Rng(seed);
      const got = Array.from({ length: 200 }, () => rng.uniform());
      expect(got).toEqual(referenceUniforms(seed, 200));
    },
  );
});

describe('determinism', () => {
  test('the same seed gives the same draws, across every method', () => {
    const draw = (rng: Rng) => [
      ...rng.rand([5, 3]).data(),
      ...rng.randn([4], 'f64').data(),
      ...rng.randn([3], 'bf16').data(),
      rng.int(-10, 10),
      rng.normal(),
      rng.uniform(),
    ];
    expect(draw(new Rng(123))).toEqual(draw(new Rng(123)));
    expect(draw(new Rng())).toEqual(draw(new Rng(0)));
  });

  test('different seeds differ, including seeds that differ only above bit 32', () => {
    const first = (seed: number) => [...new Rng(seed).rand([16]).data()];
    const seen = new Set<string>();
    for (const seed of [0, 1, 2, 2 ** 32, 2 ** 33, -1, 12345]) seen.add(first(seed).join());
    expect(seen.size).toBe(7);
  });

  test('normal() and fillNormal() draw from one stream, spare included', () => {
    const a = new Rng(9);
    const b = new Rng(9);
    const viaNormal = Array.from({ length: 5 }, () => a.normal());
    const viaFill = new Float64Array(5);
    b.fillNormal(viaFill);
    expect([...viaFill]).toEqual(viaNormal);
    // Each now holds a pending spare; fillNormal must hand it out first.
    const withSpare = new Float64Array(4);
    b.fillNormal(withSpare);
    expect([...withSpare]).toEqual([a.normal(), a.normal(), a.normal(), a.normal()]);
    expect(b.normal()).toBe(a.normal());
  });
});

describe('uniform', () => {
  const n = 200_000;

  test('uniform() lies in [0, 1) with mean 1/2 and variance 1/12', () => {
    const rng = new Rng(7);
    const xs = new Float64Array(n);
    for (let i = 0; i < n; i++) xs[i] = rng.uniform();
    expect(xs.reduce((m, x) => Math.min(m, x))).toBeGreaterThanOrEqual(0);
    expect(xs.reduce((m, x) => Math.max(m, x))).toBeLessThan(1);
    const { mean, variance } = moments(xs);
    // 5 standard errors: a false alarm has probability below 1e-6.
    expect(Math.abs(mean - 0.5)).toBeLessThan(5 * Math.sqrt(1 / 12 / n));
    expect(Math.abs(variance - 1 / 12)).toBeLessThan(5 * Math.sqrt(1 / 180 / n));
  });

  test('fillUniform spreads evenly over 20 bins (chi-square)', () => {
    const rng = new Rng(11);
    const xs = new Float32Array(n);
    rng.fillUniform(xs, -3, 5);
    expect(xs.every((x) => x >= -3 && x < 5)).toBe(true);
    const bins = new Array<number>(20).fill(0);
    for (const x of xs) bins[Math.floor(((x + 3) / 8) * 20)]!++;
    const e = n / 20;
    const chi2 = bins.reduce((s, c) => s + (c - e) ** 2 / e, 0);
    expect(chi2).toBeLessThan(50); // 19 degrees of freedom: P(chi2 > 50) < 2e-4
  });

  test('stays half-open after rounding to float32 and float64', () => {
    const rng = new Rng(3);
    // A range two float32 ulps wide: every draw must land on one of its two float32 values.
    const lo = 1;
    const hi = 1 + 2 * 2 ** -23;
    const f32 = new Float32Array(4000);
    rng.fillUniform(f32, lo, hi);
    expect(new Set(f32)).toEqual(new Set([1, 1 + 2 ** -23]));
    // Bounds float32 cannot hold: values stay within the asked interval.
    rng.fillUniform(f32, -0.1, 0.1);
    for (const x of f32) expect(x >= -0.1 && x < 0.1).toBe(true);
    const f64 = new Float64Array(4000);
    rng.fillUniform(f64, 1e15, 1e15 + 4);
    for (const x of f64) expect(x >= 1e15 && x < 1e15 + 4).toBe(true);
  });

  test('rand in every float dtype stays in [0, 1) after encoding', () => {
    const rng = new Rng(5);
    for (const dtype of ['f64', 'f32', 'f16', 'bf16'] as const) {
      const t = rng.rand([64, 64], dtype);
      expect(t.dtype).toBe(dtype);
      expect([...t.shape]).toEqual([64, 64]);
      const xs = t.toFloat64Array();
      expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...xs)).toBeLessThan(1);
      expect(Math.abs(moments(xs).mean - 0.5)).toBeLessThan(
        5 * Math.sqrt(1 / 12 / xs.length) + 2 ** -9,
      );
    }
  });

  test('int(lo, hi) covers [lo, hi) evenly', () => {
    const rng = new Rng(13);
    const counts = new Map<number, number>();
    for (let i = 0; i < 70_000; i++) {
      const k = rng.int(-3, 4);
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    expect([...counts.keys()].sort((a, b) => a - b)).toEqual([-3, -2, -1, 0, 1, 2, 3]);
    const chi2 = [...counts.values()].reduce((s, c) => s + (c - 10_000) ** 2 / 10_000, 0);
    expect(chi2).toBeLessThan(30); // 6 degrees of freedom: P(chi2 > 30) < 5e-5
    for (let i = 0; i < 1000; i++) {
      const k = rng.int(2 ** 40, 2 ** 40 + 2 ** 32);
      expect(k >= 2 ** 40 && k < 2 ** 40 + 2 ** 32 && Number.isInteger(k)).toBe(true);
    }
    expect(rng.int(5, 6)).toBe(5);
  });
});

describe('normal', () => {
  const n = 200_000;

  test('normal() has mean 0, variance 1 and the 68-95 rule', () => {
    const rng = new Rng(17);
    const xs = new Float64Array(n);
    for (let i = 0; i < n; i++) xs[i] = rng.normal();
    const { mean, variance } = moments(xs);
    expect(Math.abs(mean)).toBeLessThan(5 / Math.sqrt(n));
    expect(Math.abs(variance - 1)).toBeLessThan(5 * Math.sqrt(2 / n));
    const within1 = xs.filter((x) => Math.abs(x) < 1).length / n;
    const within2 = xs.filter((x) => Math.abs(x) < 2).length / n;
    expect(Math.abs(within1 - 0.682689)).toBeLessThan(0.005);
    expect(Math.abs(within2 - 0.9545)).toBeLessThan(0.003);
  });

  test('fillNormal honours mean and std', () => {
    const rng = new Rng(19);
    const xs = new Float32Array(n + 1); // odd length exercises the trailing single draw
    rng.fillNormal(xs, 3, 2);
    const { mean, variance } = moments(xs);
    expect(Math.abs(mean - 3)).toBeLessThan((5 * 2) / Math.sqrt(n));
    expect(Math.abs(variance - 4)).toBeLessThan(5 * 4 * Math.sqrt(2 / n));
    expect(xs.every((x) => Number.isFinite(x))).toBe(true);
  });

  test('randn in f16 and bf16 is the float64 draw rounded once', () => {
    for (const [dtype, enc, dec] of [
      ['f16', f16ToBits, bitsToF16],
      ['bf16', bf16ToBits, bitsToBf16],
    ] as const) {
      const half = new Rng(23).randn([50, 40], dtype, 0.5);
      const wide = new Rng(23).randn([50, 40], 'f64', 0.5);
      expect(half.dtype).toBe(dtype);
      const bits = half.data() as Uint16Array;
      const ref = wide.data() as Float64Array;
      for (let i = 0; i < ref.length; i++) expect(bits[i]).toBe(enc(ref[i]!));
      const decoded = Array.from(bits, dec);
      expect(decoded.every((x) => Number.isFinite(x))).toBe(true);
      expect(Math.abs(moments(decoded).variance - 0.25)).toBeLessThan(0.03);
    }
  });
});

describe('argument errors', () => {
  const argOf = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      return [(err as Error).constructor, (err as ValueError).argument];
    }
    return undefined;
  };
  const rng = new Rng(1);

  test('seed', () => {
    expect(argOf(() => new Rng(1.5))).toEqual([ValueError, 'seed']);
    expect(argOf(() => new Rng(Number.NaN))).toEqual([ValueError, 'seed']);
    expect(argOf(() => new Rng(2 ** 60))).toEqual([ValueError, 'seed']);
  });

  test('fill bounds and arrays', () => {
    expect(argOf(() => rng.fillUniform(new Float32Array(2), 1, 1))).toEqual([ValueError, 'hi']);
    expect(argOf(() => rng.fillUniform(new Float32Array(2), Number.NaN, 1))).toEqual([
      ValueError,
      'lo',
    ]);
    expect(
      argOf(() => rng.fillUniform(new Float64Array(2), -Number.MAX_VALUE, Number.MAX_VALUE)),
    ).toEqual([ValueError, 'hi']);
    expect(argOf(() => rng.fillUniform(new Float32Array(2), 0.1, 0.1 + 1e-12))).toEqual([
      ValueError,
      'hi',
    ]);
    expect(argOf(() => rng.fillUniform(new Int32Array(2) as never))).toEqual([DTypeError, 'out']);
    expect(argOf(() => rng.fillNormal(new Float32Array(2), 0, -1))).toEqual([ValueError, 'std']);
    expect(argOf(() => rng.fillNormal(new Float32Array(2), Number.POSITIVE_INFINITY))).toEqual([
      ValueError,
      'mean',
    ]);
  });

  test('tensor shapes and dtypes', () => {
    expect(argOf(() => rng.rand([2, -1]))).toEqual([ShapeError, 'shape']);
    expect(argOf(() => rng.rand([2], 'i32'))).toEqual([DTypeError, 'dtype']);
    expect(argOf(() => rng.randn([2], 'f17' as never))).toEqual([DTypeError, 'dtype']);
    expect(argOf(() => rng.randn([2], 'f32', Number.NaN))).toEqual([ValueError, 'std']);
  });

  test('int bounds', () => {
    expect(argOf(() => rng.int(3, 3))).toEqual([ValueError, 'hi']);
    expect(argOf(() => rng.int(0.5, 3))).toEqual([ValueError, 'lo']);
    expect(argOf(() => rng.int(0, 2 ** 32 + 1))).toEqual([ValueError, 'hi']);
  });
});
