/**
 * IEEE binary16 (f16) and bfloat16 encode/decode. Encoding rounds the exact value of the
 * input number (a double) to nearest, ties to even, so no double rounding through f32 happens;
 * values past the largest finite half overflow to +-Infinity, tiny ones go through the
 * subnormals to signed zero; NaN becomes the canonical quiet NaN.
 */

interface HalfFormat {
  expBits: number;
  mantBits: number;
}

const F16: HalfFormat = { expBits: 5, mantBits: 10 };
const BF16: HalfFormat = { expBits: 8, mantBits: 7 };

function roundHalfEven(q: number): number {
  const f = Math.floor(q);
  const d = q - f; // exact: q < 2^(mant+2)
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function encode(x: number, fmt: HalfFormat): number {
  const { expBits: E, mantBits: M } = fmt;
  const bias = (1 << (E - 1)) - 1;
  const expMask = (1 << E) - 1;
  if (Number.isNaN(x)) return (expMask << M) | (1 << (M - 1));
  const sign = x < 0 || Object.is(x, -0) ? 1 << (E + M) : 0;
  const a = Math.abs(x);
  if (a === Number.POSITIVE_INFINITY) return sign | (expMask << M);
  if (a === 0) return sign;
  const emin = 1 - bias;
  let e = Math.floor(Math.log2(a));
  // log2 can be off by one ulp near powers of two; fix the exponent exactly.
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  if (e < emin) e = emin;
  let m = roundHalfEven(a * 2 ** (M - e)); // power-of-two scaling is exact
  if (m >= 2 ** (M + 1)) {
    e++;
    m /= 2;
  }
  if (e > bias) return sign | (expMask << M);
  if (m < 2 ** M) return sign | m; // subnormal (e === emin)
  return sign | ((e + bias) << M) | (m - 2 ** M);
}

function decode(bits: number, fmt: HalfFormat): number {
  const { expBits: E, mantBits: M } = fmt;
  const bias = (1 << (E - 1)) - 1;
  const expMask = (1 << E) - 1;
  const s = bits & (1 << (E + M)) ? -1 : 1;
  const e = (bits >>> M) & expMask;
  const m = bits & ((1 << M) - 1);
  if (e === expMask) return m ? Number.NaN : s * Number.POSITIVE_INFINITY;
  if (e === 0) return s * m * 2 ** (1 - bias - M);
  return s * (1 + m / 2 ** M) * 2 ** (e - bias);
}

export const f16ToBits = (x: number): number => encode(x, F16);
export const bitsToF16 = (bits: number): number => decode(bits, F16);
export const bf16ToBits = (x: number): number => encode(x, BF16);
export const bitsToBf16 = (bits: number): number => decode(bits, BF16);

/** Largest finite values, for tests and saturation. */
export const F16_MAX = 65504;
export const BF16_MAX = (2 - 2 ** -7) * 2 ** 127;

// Decoding is a pure function of 16 bits: a 64K-entry table makes bulk decode a lookup.
let f16Table: Float32Array | undefined;
let bf16Table: Float32Array | undefined;
function table(kind: 'f16' | 'bf16'): Float32Array {
  if (kind === 'f16') {
    if (!f16Table) {
      f16Table = new Float32Array(65536);
      for (let i = 0; i < 65536; i++) f16Table[i] = bitsToF16(i);
    }
    return f16Table;
  }
  if (!bf16Table) {
    bf16Table = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) bf16Table[i] = bitsToBf16(i);
  }
  return bf16Table;
}

export function encodeHalfArray(
  kind: 'f16' | 'bf16',
  src: ArrayLike<number>,
  out: Uint16Array = new Uint16Array(src.length),
): Uint16Array {
  const enc = kind === 'f16' ? f16ToBits : bf16ToBits;
  for (let i = 0; i < src.length; i++) out[i] = enc(src[i]!);
  return out;
}

export function decodeHalfArray<T extends Float32Array | Float64Array>(
  kind: 'f16' | 'bf16',
  src: Uint16Array,
  out: T,
): T {
  const t = table(kind);
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]!]!;
  return out;
}
