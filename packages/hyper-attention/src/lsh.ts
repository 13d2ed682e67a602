import {
  DeviceError,
  DTypeError,
  describe,
  Rng,
  ShapeError,
  Tensor,
  ValueError,
} from '@attnkit/tensor';
import { lshSortWebGpu } from './webgpu/host.js';

/**
 * Angular LSH with Gray-ordered buckets: sortLSH of HyperAttention (Han et al. 2023, Algorithm 1
 * and Definition 1). `numProjections` = P random hyperplanes r_0..r_{P-1} (standard normal
 * entries, drawn from the seeded xoshiro Rng of @attnkit/tensor); a row x gets the sign code
 *
 *     code(x) = sum_p [x . r_p > 0] 2^p        (a dot product of exactly 0 gives bit 0)
 *
 * and its bucket is the code's position in the reflected binary Gray sequence,
 *
 *     bucket(x) = grayRank(code(x)),  grayRank = the inverse of grayCode(r) = r ^ (r >> 1),
 *
 * so the buckets of consecutive ranks r, r + 1 hold codes grayCode(r), grayCode(r + 1) that
 * differ in exactly one hyperplane's side (neighbouring buckets are neighbouring cells on the
 * sphere, which is why a sort by bucket keeps near rows near). The paper's implementation maps
 * code -> grayCode(code) instead (its `perm[bin_ids]` table holds the Gray sequence), which orders
 * the buckets by a Gray *code* of the sign code rather than by Gray *rank*; under that order
 * neighbouring buckets do not in general differ in one bit, so the rank is used here.
 */

/** Hyperplanes are drawn per call site; more than 30 would overflow the Int32 buckets. */
export const MAX_PROJECTIONS = 30;

/** The r-th word of the reflected binary Gray code: r ^ (r >> 1). */
export function grayCode(r: number): number {
  return (r ^ (r >>> 1)) >>> 0;
}

/** The rank of `code` in the Gray sequence (inverse of grayCode): the prefix XOR of its bits. */
export function grayRank(code: number): number {
  let r = code >>> 0;
  for (let s = 1; s < 32; s <<= 1) r ^= r >>> s;
  return r >>> 0;
}

export interface AngularLshOptions {
  /** Hyperplanes P, an integer in [1, 30]: 2^P buckets. */
  numProjections: number;
  /** Row length D of the hashed rows. */
  dim: number;
  /** Seed of the hyperplanes (a safe integer, default 0); ignored when `rng` is given. */
  seed?: number;
  /** Draw the hyperplanes from this generator instead (it advances by P * D normals). */
  rng?: Rng;
}

export interface LshSort {
  /** Bucket of every row, in the input's row order: [...leading, N]. */
  buckets: Int32Array;
  /**
   * Per leading index, the stable sort of its N rows by bucket: entry i is the position of the
   * row sorted i-th ([...leading, N], each slice a permutation of 0..N-1).
   */
  perm: Int32Array;
}

function positiveInt(value: unknown, name: string, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    throw new ValueError(
      `${name}: expected an integer in [1, ${max === Number.MAX_SAFE_INTEGER ? 'inf)' : `${max}]`}, got ${describe(value)}`,
      name,
    );
  }
  return value;
}

export class AngularLsh {
  readonly numProjections: number;
  readonly dim: number;
  /** The hyperplanes, row-major [P, D] (hyperplane p is row p). */
  readonly projections: Float64Array;
  /** The same, padded with zero rows to a multiple of 4 hyperplanes (hashRows' blocks of 4). */
  private readonly padded: Float64Array;

  constructor(options: AngularLshOptions) {
    if (options === null || typeof options !== 'object')
      throw new ValueError(
        `options: expected { numProjections, dim, seed? }, got ${describe(options)}`,
        'options',
      );
    this.numProjections = positiveInt(options.numProjections, 'numProjections', MAX_PROJECTIONS);
    this.dim = positiveInt(options.dim, 'dim');
    if (options.rng !== undefined && !(options.rng instanceof Rng))
      throw new ValueError(`rng: expected an Rng, got ${describe(options.rng)}`, 'rng');
    const rng = options.rng ?? new Rng(options.seed ?? 0);
    this.projections = new Float64Array(this.numProjections * this.dim);
    rng.fillNormal(this.projections);
    this.padded = new Float64Array(Math.ceil(this.numProjections / 4) * 4 * this.dim);
    this.padded.set(this.projections);
  }

  /** Number of buckets, 2^P. */
  get numBuckets(): number {
    return 2 ** this.numProjections;
  }

  /**
   * Buckets of `rows` rows of length D stored contiguously in `data` from `offset`, written to
   * `out` from `outOffset`. Identical rows get identical buckets (same arithmetic, same order).
   */
  hashRows(
    data: ArrayLike<number>,
    offset: number,
    rows: number,
    out: Int32Array,
    outOffset = 0,
  ): Int32Array {
    const { dim: d, numProjections: np } = this;
    const r = this.padded;
    for (let i = 0; i < rows; i++) {
      const x = offset + i * d;
      let code = 0;
      // Four dot products at once, each sum in a register and over c in order (the same f64
      // operations as one at a time, so the same buckets bit for bit): four independent add
      // chains hide the add latency and each element of the row is loaded once for the four.
      // V8 ran the loop over a Float64Array of P running sums 4x slower.
      for (let p = 0; p < np; p += 4) {
        const r0 = p * d;
        const r1 = r0 + d;
        const r2 = r1 + d;
        const r3 = r2 + d;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        for (let c = 0; c < d; c++) {
          const xc = data[x + c]!;
          s0 += xc * r[r0 + c]!;
          s1 += xc * r[r1 + c]!;
          s2 += xc * r[r2 + c]!;
          s3 += xc * r[r3 + c]!;
        }
        if (s0 > 0) code |= 1 << p;
        if (s1 > 0 && p + 1 < np) code |= 1 << (p + 1);
        if (s2 > 0 && p + 2 < np) code |= 1 << (p + 2);
        if (s3 > 0 && p + 3 < np) code |= 1 << (p + 3);
      }
      out[outOffset + i] = grayRank(code);
    }
    return out;
  }

  /**
   * hashRows with the dot products on a GEMM and the same buckets, bit for bit. `gemm` writes
   * C = X R^T in f32 (rows x P; R the planes, rounded to f32), `sumSquares` each row's sum of
   * squares. An f32 dot within its error bound of 0 could have the other sign in f64, so a row
   * with any |dot_p| <= (D + 2) 2^-23 |x| |r_p| (twice the GEMM's bound, with Cauchy-Schwarz
   * for sum_c |x_c r_pc|) is hashed again by hashRows; on random rows a few in 10^4 are. A
   * non-finite row (its norm is not finite) always is.
   */
  hashRowsWith(
    kernels: {
      gemm: (m: number, a: Float32Array, b: Float32Array, c: Float32Array) => void;
      sumSquares: (m: number, a: Float32Array, out: Float32Array) => void;
    },
    data: Float32Array,
    rows: number,
    out: Int32Array,
  ): Int32Array {
    const { dim: d, numProjections: np, projections: r } = this;
    for (const name of ['gemm', 'sumSquares'] as const) {
      if (typeof (kernels as Partial<typeof kernels> | null)?.[name] !== 'function')
        throw new ValueError(
          `kernels.${name}: expected a function, got ${describe((kernels as Partial<typeof kernels> | null)?.[name])}`,
          `kernels.${name}`,
        );
    }
    if (!Number.isInteger(rows) || rows < 0)
      throw new ValueError(`rows: expected an integer >= 0, got ${describe(rows)}`, 'rows');
    if (!(data instanceof Float32Array) || data.length < rows * d)
      throw new ValueError(
        `data: expected a Float32Array of at least rows x dim = ${rows * d} elements, got ${describe(data)}`,
        'data',
      );
    if (!(out instanceof Int32Array) || out.length < rows)
      throw new ValueError(
        `out: expected an Int32Array of at least rows = ${rows} elements, got ${describe(out)}`,
        'out',
      );
    const x = data.subarray(0, rows * d);
    const dots = new Float32Array(rows * np);
    kernels.gemm(rows, x, Float32Array.from(r), dots);
    const squares = new Float32Array(rows);
    kernels.sumSquares(rows, x, squares);
    const planeNorm = new Float64Array(np);
    for (let p = 0; p < np; p++) {
      let sum = 0;
      for (let c = 0; c < d; c++) sum += r[p * d + c]! ** 2;
      // The f32 sums of squares carry a relative error up to 2^-24: 2^-20 covers it.
      planeNorm[p] = (d + 2) * 2 ** -23 * Math.sqrt(sum * (1 + 2 ** -20));
    }
    for (let i = 0; i < rows; i++) {
      const norm = Math.sqrt(squares[i]!);
      let code = 0;
      let sure = true;
      for (let p = 0; p < np; p++) {
        const s = dots[i * np + p]!;
        if (!(Math.abs(s) > planeNorm[p]! * norm)) sure = false;
        if (s > 0) code |= 1 << p;
      }
      if (sure) out[i] = grayRank(code);
      else this.hashRows(data, i * d, 1, out, i);
    }
    return out;
  }

  /** Buckets of every row of x [..., N, D] (cpu, float), shape [..., N] row-major. */
  buckets(x: Tensor): Int32Array {
    const { rows, data } = this.rowsOf(x);
    return this.hashRows(data, 0, rows, new Int32Array(rows));
  }

  /**
   * Buckets of x [..., N, D] and, for each leading index (e.g. each (batch, head) of BHND), the
   * stable sort of its N rows by bucket.
   */
  sort(x: Tensor): LshSort {
    const buckets = this.buckets(x);
    const n = x.shape[x.ndim - 2]!;
    const perm = new Int32Array(buckets.length);
    const ids = new Int32Array(n);
    for (let s = 0; s < buckets.length; s += n) {
      for (let i = 0; i < n; i++) ids[i] = i;
      perm.set(sortByBucket(ids, buckets.subarray(s, s + n), this.numProjections), s);
    }
    return { buckets, perm };
  }

  /**
   * sort() on x's device, the buckets and permutations as Int32 tensors [..., N] there: a cpu
   * x through sort(); a webgpu x (f32) hashed and sorted on the GPU (./webgpu: the same
   * buckets as the ts path, up to a dot product within f32 rounding of 0, and the same stable
   * order), nothing read back.
   */
  async sortOnDevice(x: Tensor): Promise<{ buckets: Tensor; perm: Tensor }> {
    if (!isTensorLike(x)) throw new ValueError(`x: expected a Tensor, got ${describe(x)}`, 'x');
    if (x.device !== 'webgpu') {
      const { buckets, perm } = this.sort(x);
      const shape = x.shape.slice(0, -1);
      return { buckets: Tensor.from(buckets, shape), perm: Tensor.from(perm, shape) };
    }
    this.checkShape(x);
    if (x.dtype !== 'f32') throw new DTypeError(`x: expected f32 on webgpu, got ${x.dtype}`, 'x');
    return lshSortWebGpu(x, this.projections, this.numProjections);
  }

  private checkShape(x: Tensor): void {
    if (x.ndim < 2 || x.shape[x.ndim - 1] !== this.dim)
      throw new ShapeError(
        `x: expected shape [..., N, ${this.dim}], got [${x.shape.join(', ')}]`,
        'x',
      );
  }

  private rowsOf(x: Tensor): { rows: number; data: Float32Array | Float64Array } {
    // Duck-typed, as the other families: a second copy of @attnkit/tensor (two installed
    // versions, a bundle beside a dist) makes tensors that fail instanceof but work alike.
    if (!isTensorLike(x)) throw new ValueError(`x: expected a Tensor, got ${describe(x)}`, 'x');
    if (x.device !== 'cpu')
      throw new DeviceError(
        `x: expected a cpu tensor (sortOnDevice takes webgpu tensors), got one on ${x.device}`,
        'x',
      );
    this.checkShape(x);
    if (!['f32', 'f64', 'f16', 'bf16'].includes(x.dtype))
      throw new DTypeError(`x: expected a float tensor, got ${x.dtype}`, 'x');
    const data =
      x.dtype === 'f32' || x.dtype === 'f64'
        ? (x.data() as Float32Array | Float64Array)
        : x.toFloat32Array();
    return { rows: x.size / this.dim, data };
  }
}

/**
 * Stable sort of `ids` by `bucket[id]` (buckets in [0, 2^numProjections)): LSD radix sort on
 * 8-bit digits, one counting pass per digit, so equal buckets keep the order of `ids`. Returns a
 * new array; `bucket` is indexed by the ids' values.
 */
export function sortByBucket(
  ids: Int32Array,
  bucket: ArrayLike<number>,
  numProjections: number,
): Int32Array {
  positiveInt(numProjections, 'numProjections', MAX_PROJECTIONS);
  let src = Int32Array.from(ids);
  let dst = new Int32Array(ids.length);
  const count = new Int32Array(257);
  for (let shift = 0; shift < numProjections; shift += 8) {
    count.fill(0);
    for (let i = 0; i < src.length; i++) count[((bucket[src[i]!]! >>> shift) & 255) + 1]!++;
    for (let c = 0; c < 256; c++) count[c + 1]! += count[c]!;
    for (let i = 0; i < src.length; i++) {
      const id = src[i]!;
      dst[count[(bucket[id]! >>> shift) & 255]!++] = id;
    }
    [src, dst] = [dst, src];
  }
  return src;
}

/** A Tensor of any copy of @attnkit/tensor (see rowsOf). */
export function isTensorLike(t: unknown): t is Tensor {
  const x = t as Tensor;
  return !!x && typeof x === 'object' && Array.isArray(x.shape) && typeof x.device === 'string';
}
