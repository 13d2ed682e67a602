/**
 * IEEE binary16 (f16) and bfloat16 encode/decode. Encoding rounds the exact value of the
 * input number (a double) to nearest, ties to even, so no double rounding through f32 happens;
 * values past the largest finite half overflow to +-Infinity, tiny ones go through the
 * subnormals to signed zero; NaN becomes the canonical quiet NaN.
 */

interface HalfFormat {
  expBits: number;
  mantBits: number;
  bias: number;
  emin: number;
  expMask: number;
  signBit: number;
  implicit: number; // 2^mantBits: the hidden leading 1
  nan: number; // canonical quiet NaN pattern
}

function halfFormat(expBits: number, mantBits: number): HalfFormat {
  const bias = (1 << (expBits - 1)) - 1;
  const expMask = (1 << expBits) - 1;
  return {
    expBits,
    mantBits,
    bias,
    emin: 1 - bias,
    expMask,
    signBit: 1 << (expBits + mantBits),
    implicit: 1 << mantBits,
    nan: (expMask << mantBits) | (1 << (mantBits - 1)),
  };
}

const F16 = halfFormat(5, 10);
const BF16 = halfFormat(8, 7);

// Exact powers of two 2^-1024 .. 2^255: a lookup is much faster than `2 ** k` per element.
const POW2_OFFSET = 1024;
const POW2 = Float64Array.from({ length: 1280 }, (_, i) => 2 ** (i - POW2_OFFSET));

const scratch = new DataView(new ArrayBuffer(8));

function encode(x: number, fmt: HalfFormat): number {
  if (Number.isNaN(x)) return fmt.nan;
  const M = fmt.mantBits;
  scratch.setFloat64(0, x, true);
  const hi = scratch.getUint32(4, true);
  const sign = hi >>> 31 ? fmt.signBit : 0; // also right for -0
  const a = Math.abs(x);
  if (a === Number.POSITIVE_INFINITY) return sign | (fmt.expMask << M);
  if (a === 0) return sign;
  // floor(log2(a)) read exactly from the exponent field; subnormal doubles read as -1023,
  // far below emin, where they are clamped anyway.
  let e = ((hi >>> 20) & 0x7ff) - 1023;
  if (e < fmt.emin) e = fmt.emin;
  // q has M + 1 integer bits (fewer for subnormals); power-of-two scaling is exact.
  const q = a * POW2[M - e + POW2_OFFSET]!;
  let m = Math.floor(q);
  const frac = q - m; // exact: q < 2^(M+1)
  if (frac > 0.5 || (frac === 0.5 && m % 2 === 1)) m++;
  if (m >= 2 * fmt.implicit) {
    e++;
    m /= 2;
  }
  if (e > fmt.bias) return sign | (fmt.expMask << M);
  if (m < fmt.implicit) return sign | m; // subnormal (e === emin)
  return sign | ((e + fmt.bias) << M) | (m - fmt.implicit);
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
