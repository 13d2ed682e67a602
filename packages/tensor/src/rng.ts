/**
 * Seeded pseudo-random numbers: xoshiro128** (Blackman & Vigna, 2018) seeded through
 * splitmix32. 32-bit state words and Math.imul keep the hot path free of BigInt; the same seed
 * gives the same stream on every JS engine.
 */
import { allocStorage, assertDType, type DType, isFloatDType } from './dtype.js';
import { DTypeError, describe, ValueError } from './errors.js';
import { bf16ToBits, bitsToBf16, bitsToF16, encodeHalfArray, f16ToBits } from './half.js';
import { assertShape, numel, type Shape } from './shape.js';
import { CpuStorage } from './storage.js';
import { Tensor } from './tensor.js';

const TWO_32 = 2 ** 32;
const TWO_NEG_24 = 2 ** -24;
const TWO_NEG_53 = 2 ** -53;

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;
  /** Box-Muller yields normals in pairs; the second is kept for the next normal() call. */
  private spare: number | undefined;

  /** `seed`: any safe integer (default 0); both its low and high 32 bits matter. */
  constructor(seed = 0) {
    if (!Number.isSafeInteger(seed)) {
      throw new ValueError(`seed: expected a safe integer, got ${describe(seed)}`, 'seed');
    }
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_32) >>> 0;
    // splitmix32 is a bijection of its counter, so four consecutive outputs are never all
    // zero: xoshiro's one forbidden state cannot occur.
    let x = (lo ^ Math.imul(hi, 0x85ebca6b)) | 0;
    const next = (): number => {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
      return (z ^ (z >>> 15)) | 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** The next raw 32-bit output, as an unsigned integer. */
  private nextU32(): number {
    const s1 = this.s1;
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9);
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = (this.s3 << 11) | (this.s3 >>> 21);
    return result >>> 0;
  }

  /** Uniform in [0, 1) with 53 random bits (every result is a multiple of 2^-53). */
  uniform(): number {
    const a = this.nextU32() >>> 5; // 27 bits
    const b = this.nextU32() >>> 6; // 26 bits
    return (a * 2 ** 26 + b) * TWO_NEG_53;
  }

  /** Standard normal (Box-Muller). */
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare;
      this.spare = undefined;
      return s;
    }
    const [z0, z1] = this.boxMuller();
    this.spare = z1;
    return z0;
  }

  /**
   * Fills `out` with uniforms in [lo, hi). Float32Array gets 24-bit uniforms (all a float32
   * can resolve) and Float64Array 53-bit ones. The interval stays half-open in the array's own
   * precision: a float64 draw that rounds up to `hi` is redrawn, and a float32 value that rounds
   * outside [lo, hi) is clamped to the nearest float32 inside (a bias of at most one ulp's share).
   */
  fillUniform(out: Float32Array | Float64Array, lo = 0, hi = 1): void {
    checkFloatArray(out);
    if (!Number.isFinite(lo)) {
      throw new ValueError(`lo: expected a finite number, got ${describe(lo)}`, 'lo');
    }
    if (!Number.isFinite(hi) || !(lo < hi) || !Number.isFinite(hi - lo)) {
      throw new ValueError(
        `hi: expected a finite number > lo (${describe(lo)}) with finite hi - lo, got ${describe(hi)}`,
        'hi',
      );
    }
    const span = hi - lo;
    if (out instanceof Float64Array) {
      // lo + span * u only reaches hi for u within a few ulps of 1: redraws are rare.
      for (let i = 0; i < out.length; i++) {
        do out[i] = lo + span * this.uniform();
        while (out[i]! >= hi);
      }
      return;
    }
    const first = float32AtLeast(lo);
    const last = float32Below(hi);
    if (!(first <= last)) {
      throw new ValueError(
        `hi: no float32 value lies in [${describe(lo)}, ${describe(hi)}) for a Float32Array`,
        'hi',
      );
    }
    for (let i = 0; i < out.length; i++) {
      const v = Math.fround(lo + span * ((this.nextU32() >>> 8) * TWO_NEG_24));
      out[i] = Math.min(Math.max(v, first), last);
    }
  }

  /** Fills `out` with normals of the given mean and standard deviation. */
  fillNormal(out: Float32Array | Float64Array, mean = 0, std = 1): void {
    checkFloatArray(out);
    checkMoments(mean, std);
    const n = out.length;
    let i = 0;
    if (this.spare !== undefined && n > 0) {
      out[i++] = mean + std * this.spare;
      this.spare = undefined;
    }
    for (; i + 1 < n; i += 2) {
      const [z0, z1] = this.boxMuller();
      out[i] = mean + std * z0;
      out[i + 1] = mean + std * z1;
    }
    if (i < n) out[i] = mean + std * this.normal();
  }

  /** A tensor of uniforms in [0, 1) (half-open in `dtype`'s own precision). Float dtypes only. */
  rand(shape: Shape, dtype: DType = 'f32'): Tensor {
    const sh = assertShape(shape);
    const dt = floatDType(dtype);
    const n = numel(sh);
    if (dt === 'f32' || dt === 'f64') {
      const out = dt === 'f32' ? allocStorage('f32', n, sh) : allocStorage('f64', n, sh);
      this.fillUniform(out);
      return Tensor.from(out, sh);
    }
    const encode = dt === 'f16' ? f16ToBits : bf16ToBits;
    const decode = dt === 'f16' ? bitsToF16 : bitsToBf16;
    const bits = allocStorage(dt, n, sh);
    for (let i = 0; i < n; i++) {
      // Draws within half an ulp of 1 round to 1.0 in f16/bf16; redraw them.
      let w = encode(this.uniform());
      while (decode(w) >= 1) w = encode(this.uniform());
      bits[i] = w;
    }
    return new Tensor(new CpuStorage(dt, bits), sh);
  }

  /** A tensor of normals with mean 0 and standard deviation `std`. Float dtypes only. */
  randn(shape: Shape, dtype: DType = 'f32', std = 1): Tensor {
    const sh = assertShape(shape);
    const dt = floatDType(dtype);
    checkMoments(0, std);
    const n = numel(sh);
    if (dt === 'f32') {
      const out = allocStorage('f32', n, sh);
      this.fillNormal(out, 0, std);
      return Tensor.from(out, sh);
    }
    // Halves are drawn in float64 and rounded once, avoiding double rounding through float32.
    // The f64 draws of a half tensor: 4x its own bytes, named with its shape if too large.
    const wide = allocStorage('f64', n, sh);
    this.fillNormal(wide, 0, std);
    if (dt === 'f64') return Tensor.from(wide, sh);
    return new Tensor(new CpuStorage(dt, encodeHalfArray(dt, wide, allocStorage(dt, n, sh))), sh);
  }

  /** Uniform integer in [lo, hi), unbiased; hi - lo at most 2^32. */
  int(lo: number, hi: number): number {
    if (!Number.isSafeInteger(lo) || !Number.isSafeInteger(hi) || !(lo < hi) || hi - lo > TWO_32) {
      throw new ValueError(
        `lo/hi: expected safe integers with lo < hi and hi - lo <= 2^32, got ${describe(lo)}, ${describe(hi)}`,
        Number.isSafeInteger(lo) ? 'hi' : 'lo',
      );
    }
    const n = hi - lo;
    // Rejection sampling: accept only the largest multiple of n below 2^32, so every residue
    // is equally likely.
    const limit = TWO_32 - (TWO_32 % n);
    let x = this.nextU32();
    while (x >= limit) x = this.nextU32();
    return lo + (x % n);
  }

  private boxMuller(): [number, number] {
    // 1 - u lies in (0, 1], so the log is finite.
    const r = Math.sqrt(-2 * Math.log(1 - this.uniform()));
    const theta = 2 * Math.PI * this.uniform();
    return [r * Math.cos(theta), r * Math.sin(theta)];
  }
}

function checkFloatArray(out: unknown): void {
  if (!(out instanceof Float32Array) && !(out instanceof Float64Array)) {
    throw new DTypeError(
      `out: expected a Float32Array or Float64Array, got ${describe(out)}`,
      'out',
    );
  }
}

function checkMoments(mean: number, std: number): void {
  if (!Number.isFinite(mean)) {
    throw new ValueError(`mean: expected a finite number, got ${describe(mean)}`, 'mean');
  }
  if (!Number.isFinite(std) || std < 0) {
    throw new ValueError(`std: expected a finite number >= 0, got ${describe(std)}`, 'std');
  }
}

type FloatDType = 'f64' | 'f32' | 'f16' | 'bf16';

function floatDType(dtype: unknown): FloatDType {
  const dt = assertDType(dtype);
  if (!isFloatDType(dt)) {
    throw new DTypeError(
      `dtype: random tensors need a float dtype (f64, f32, f16, bf16), got ${dt}`,
      'dtype',
    );
  }
  return dt as FloatDType;
}

const f32Scratch = new Float32Array(1);
const i32Scratch = new Int32Array(f32Scratch.buffer);

/** The next float32 above `f` (a float32 value, possibly -Infinity). */
function nextUpF32(f: number): number {
  if (f === 0) return 2 ** -149;
  f32Scratch[0] = f;
  i32Scratch[0]! += f > 0 ? 1 : -1;
  return f32Scratch[0]!;
}

/** The smallest float32 >= x. */
function float32AtLeast(x: number): number {
  const f = Math.fround(x);
  return f >= x ? f : nextUpF32(f);
}

/** The largest float32 < x. */
function float32Below(x: number): number {
  const f = Math.fround(x);
  return f < x ? f : -nextUpF32(-f);
}
