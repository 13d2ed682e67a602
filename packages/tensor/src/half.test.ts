import { describe, expect, test } from 'vitest';
import {
  BF16_MAX,
  bf16ToBits,
  bitsToBf16,
  bitsToF16,
  decodeHalfArray,
  encodeHalfArray,
  F16_MAX,
  f16ToBits,
} from './half.js';
import { Rng } from './rng.js';

const hex = (b: number) => `0x${b.toString(16).padStart(4, '0')}`;
const isF16NaN = (b: number) => (b & 0x7c00) === 0x7c00 && (b & 0x03ff) !== 0;
const isBf16NaN = (b: number) => (b & 0x7f80) === 0x7f80 && (b & 0x007f) !== 0;

// ---- bit-level references working from float32 bits (not sharing code with half.ts) ----------

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
const bitsOfF32 = (x: number) => {
  f32[0] = x;
  return u32[0]!;
};
const f32OfBits = (b: number) => {
  u32[0] = b;
  return f32[0]!;
};

/** float32 -> binary16, round to nearest even, by integer operations on the bit pattern. */
function refF16FromF32Bits(b: number): number {
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  const mant = b & 0x7fffff;
  if (exp === 0xff) return mant ? 0x7e00 : sign | 0x7c00;
  if (exp === 0) return sign; // float32 subnormals are far below half's smallest subnormal
  const sig = mant | 0x800000; // 24 significant bits, value = sig * 2^(exp - 150)
  // Normal halves keep 11 bits (drop 13); subnormal halves count units of 2^-24.
  const shift = exp >= 113 ? 13 : 126 - exp;
  if (shift > 24) return sign; // below half of the smallest subnormal
  const q = sig >>> shift;
  const rem = sig & ((1 << shift) - 1);
  const halfway = 1 << (shift - 1);
  const r = rem > halfway || (rem === halfway && q & 1) ? q + 1 : q;
  if (exp < 113) return sign | r; // a carry into 0x400 is the smallest normal: still right
  const out = ((exp - 112) << 10) + r - 0x400;
  return out >= 0x7c00 ? sign | 0x7c00 : sign | out;
}

/** float32 -> bfloat16, round to nearest even: the classic add-and-truncate trick. */
function refBf16FromF32Bits(b: number): number {
  if ((b & 0x7f800000) === 0x7f800000 && b & 0x7fffff) return 0x7fc0;
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

describe('f16', () => {
  test.each([
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [F16_MAX, 0x7bff],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [Number.POSITIVE_INFINITY, 0x7c00],
    [Number.NEGATIVE_INFINITY, 0xfc00],
    [0, 0x0000],
  ])('%d <-> %s exactly', (x, bits) => {
    expect(hex(f16ToBits(x))).toBe(hex(bits));
    expect(bitsToF16(bits)).toBe(x);
  });

  test('round to nearest, ties to even', () => {
    expect(hex(f16ToBits(1 + 2 ** -11))).toBe('0x3c00'); // tie, 1.0 is even
    expect(hex(f16ToBits(1 + 3 * 2 ** -11))).toBe('0x3c02'); // tie, up to the even 1 + 2^-9
    expect(bitsToF16(0x3c02)).toBe(1 + 2 ** -9);
    expect(hex(f16ToBits(1 + 2 ** -11 + 2 ** -40))).toBe('0x3c01'); // past the tie
    // Rounds the double itself: via float32 this would collapse to the tie and give 0x3c00.
    expect(hex(f16ToBits(1 + 2 ** -11 + 2 ** -30))).toBe('0x3c01');
    expect(hex(f16ToBits(-(1 + 3 * 2 ** -11)))).toBe('0xbc02');
  });

  test('subnormals and underflow', () => {
    expect(hex(f16ToBits(2 ** -25))).toBe('0x0000'); // tie between 0 and 2^-24: to even 0
    expect(hex(f16ToBits(-(2 ** -25)))).toBe('0x8000');
    expect(hex(f16ToBits(2 ** -25 + 2 ** -60))).toBe('0x0001');
    expect(hex(f16ToBits(3 * 2 ** -25))).toBe('0x0002'); // tie between 1 and 2 units: to even 2
    expect(hex(f16ToBits(5 * 2 ** -25))).toBe('0x0002'); // tie between 2 and 3 units: to even 2
    expect(hex(f16ToBits(1e-10))).toBe('0x0000');
    expect(hex(f16ToBits(Number.MIN_VALUE))).toBe('0x0000');
    expect(hex(f16ToBits(1023.5 * 2 ** -24))).toBe('0x0400'); // rounds up into the normals
  });

  test('overflow at the rounding boundary', () => {
    expect(hex(f16ToBits(65519.99))).toBe('0x7bff');
    expect(hex(f16ToBits(65520))).toBe('0x7c00'); // the tie with 2^16 rounds to even: infinity
    expect(hex(f16ToBits(-65520))).toBe('0xfc00');
    expect(hex(f16ToBits(1e300))).toBe('0x7c00');
    expect(hex(f16ToBits(Number.MAX_VALUE))).toBe('0x7c00');
  });

  test('NaN and signed zero', () => {
    expect(isF16NaN(f16ToBits(Number.NaN))).toBe(true);
    expect(Number.isNaN(bitsToF16(0x7e00))).toBe(true);
    expect(Number.isNaN(bitsToF16(0xfc01))).toBe(true);
    expect(hex(f16ToBits(-0))).toBe('0x8000');
    expect(Object.is(bitsToF16(0x8000), -0)).toBe(true);
    expect(Object.is(bitsToF16(0x0000), 0)).toBe(true);
  });

  test('exhaustive: decode then encode is the identity on all 65536 patterns except NaNs', () => {
    let nans = 0;
    for (let b = 0; b < 65536; b++) {
      const x = bitsToF16(b);
      if (isF16NaN(b)) {
        nans++;
        expect(Number.isNaN(x)).toBe(true);
        expect(isF16NaN(f16ToBits(x))).toBe(true);
      } else if (f16ToBits(x) !== b) {
        expect(hex(f16ToBits(x)), hex(b)).toBe(hex(b));
      }
    }
    expect(nans).toBe(2 * 1023);
  });

  test('encode agrees with a float32 bit-twiddling reference on random floats', () => {
    const rng = new Rng(101);
    let checked = 0;
    const check = (bits: number) => {
      const x = f32OfBits(bits);
      const want = refF16FromF32Bits(bits);
      const got = f16ToBits(x);
      if (got !== want && !(isF16NaN(got) && isF16NaN(want))) {
        expect(hex(got), `float32 bits 0x${bits.toString(16)} (${x})`).toBe(hex(want));
      }
      checked++;
    };
    for (let i = 0; i < 100_000; i++) check(rng.int(0, 2 ** 32)); // every exponent
    for (let i = 0; i < 100_000; i++) {
      // exponents around half's range (2^-26 .. 2^17), where every rounding path lives
      const exp = rng.int(101, 145);
      check(((rng.int(0, 2) << 31) | (exp << 23) | rng.int(0, 2 ** 23)) >>> 0);
    }
    for (let i = 0; i < 20_000; i++) {
      // exact ties: the 13 dropped bits are 1000...0
      const exp = rng.int(101, 145);
      check(((exp << 23) | (rng.int(0, 2 ** 10) << 13) | 0x1000) >>> 0);
    }
    expect(checked).toBe(220_000);
    expect(refF16FromF32Bits(bitsOfF32(1 + 3 * 2 ** -11))).toBe(0x3c02);
  });
});

describe('bf16', () => {
  test.each([
    [1, 0x3f80],
    [-2, 0xc000],
    [BF16_MAX, 0x7f7f],
    [2 ** -126, 0x0080], // smallest normal
    [2 ** -133, 0x0001], // smallest subnormal
    [127 * 2 ** -133, 0x007f], // largest subnormal
    [Number.POSITIVE_INFINITY, 0x7f80],
    [Number.NEGATIVE_INFINITY, 0xff80],
  ])('%d <-> %s exactly', (x, bits) => {
    expect(hex(bf16ToBits(x))).toBe(hex(bits));
    expect(bitsToBf16(bits)).toBe(x);
  });

  test('rounding, subnormals, overflow, NaN, -0', () => {
    expect(hex(bf16ToBits(1 + 2 ** -8))).toBe('0x3f80'); // tie to even
    expect(hex(bf16ToBits(1 + 3 * 2 ** -8))).toBe('0x3f82');
    expect(hex(bf16ToBits(2 ** -134))).toBe('0x0000'); // tie to even zero
    expect(hex(bf16ToBits(3 * 2 ** -134))).toBe('0x0002');
    expect(hex(bf16ToBits(BF16_MAX + 2 ** 119))).toBe('0x7f80'); // half an ulp past max: to even
    expect(hex(bf16ToBits(BF16_MAX + 2 ** 118))).toBe('0x7f7f');
    expect(hex(bf16ToBits(Number.MAX_VALUE))).toBe('0x7f80');
    expect(isBf16NaN(bf16ToBits(Number.NaN))).toBe(true);
    expect(hex(bf16ToBits(-0))).toBe('0x8000');
    expect(Object.is(bitsToBf16(0x8000), -0)).toBe(true);
  });

  test('exhaustive: decode then encode is the identity on all 65536 patterns except NaNs', () => {
    let nans = 0;
    for (let b = 0; b < 65536; b++) {
      const x = bitsToBf16(b);
      if (isBf16NaN(b)) {
        nans++;
        expect(Number.isNaN(x)).toBe(true);
        expect(isBf16NaN(bf16ToBits(x))).toBe(true);
      } else if (bf16ToBits(x) !== b) {
        expect(hex(bf16ToBits(x)), hex(b)).toBe(hex(b));
      }
    }
    expect(nans).toBe(2 * 127);
  });

  test('encode agrees with the add-and-truncate reference on random floats', () => {
    const rng = new Rng(202);
    for (let i = 0; i < 100_000; i++) {
      const bits = rng.int(0, 2 ** 32);
      const got = bf16ToBits(f32OfBits(bits));
      const want = refBf16FromF32Bits(bits);
      if (got !== want && !(isBf16NaN(got) && isBf16NaN(want))) {
        expect(hex(got), `float32 bits 0x${bits.toString(16)}`).toBe(hex(want));
      }
    }
  });
});

describe('array helpers', () => {
  test('encodeHalfArray / decodeHalfArray match the scalar functions', () => {
    const rng = new Rng(303);
    const src = new Float64Array(1000);
    rng.fillNormal(src, 0, 1000);
    src[0] = Number.NaN;
    src[1] = -0;
    for (const [kind, enc, dec] of [
      ['f16', f16ToBits, bitsToF16],
      ['bf16', bf16ToBits, bitsToBf16],
    ] as const) {
      const out = new Uint16Array(src.length).fill(0xdead);
      expect(encodeHalfArray(kind, src, out)).toBe(out);
      for (let i = 0; i < src.length; i++) expect(out[i]).toBe(enc(src[i]!));
      const back = decodeHalfArray(kind, out, new Float64Array(src.length).fill(Number.NaN));
      expect(Number.isNaN(back[0]!)).toBe(true);
      expect(Object.is(back[1], -0)).toBe(true);
      for (let i = 2; i < src.length; i++) expect(back[i]).toBe(dec(out[i]!));
      const f32back = decodeHalfArray(kind, out, new Float32Array(src.length));
      expect([...f32back.subarray(2)]).toEqual([...back.subarray(2)]);
    }
  });

  test('decodeHalfArray into f32 equals the scalar decode for all 65536 patterns, in an offset view', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    for (const [kind, dec] of [
      ['f16', bitsToF16],
      ['bf16', bitsToBf16],
    ] as const) {
      // An offset view into a poisoned buffer: the output starts past element 3, nothing around it moves.
      const buf = new Float32Array(65536 + 6).fill(Number.NaN);
      buf[2] = 7;
      buf[65536 + 3] = 9;
      const out = buf.subarray(3, 3 + 65536);
      expect(decodeHalfArray(kind, all, out)).toBe(out);
      const bad: number[] = [];
      for (let h = 0; h < 65536; h++) {
        const want = Math.fround(dec(h));
        const got = out[h]!;
        if (!(Object.is(got, want) || (Number.isNaN(got) && Number.isNaN(want)))) bad.push(h);
      }
      expect(bad.slice(0, 5), `${kind}: ${bad.length} patterns differ`).toEqual([]);
      expect([buf[2], buf[65536 + 3]]).toEqual([7, 9]);
    }
  });
});
