import {
  allocStorage,
  assertDType,
  assertIntFits,
  type DType,
  dtypeOfArray,
  isIntDType,
  type StorageArrayOf,
  type TypedArray,
} from './dtype.js';
import { DeviceError, DTypeError, describe, ShapeError, ValueError } from './errors.js';
import {
  bf16ToBits,
  bitsToBf16,
  bitsToF16,
  decodeHalfArray,
  encodeHalfArray,
  f16ToBits,
} from './half.js';
import {
  assertShape,
  contiguousStrides,
  formatShape,
  normAxis,
  numel,
  type Shape,
} from './shape.js';
import { CpuStorage, type Storage } from './storage.js';

/**
 * An n-dimensional array: dtype, shape, strides (in elements) and an offset into a storage.
 * Views (reshape of contiguous data, permute, transpose, slice) share the storage; nothing is
 * copied until `contiguous()` or a conversion asks for it. Tensors are not mutated by attnkit
 * kernels: results are new tensors.
 */
export class Tensor {
  readonly shape: readonly number[];
  readonly strides: readonly number[];

  constructor(
    readonly storage: Storage,
    shape: Shape,
    strides: Shape = contiguousStrides(shape),
    readonly offset = 0,
  ) {
    // Every view passes through here: a negative, fractional or NaN extent would give a
    // negative or fractional size and skip the bounds check below, a fractional stride would
    // read between elements.
    this.shape = Object.freeze(assertShape(shape));
    this.strides = Object.freeze(assertStrides(strides));
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new ShapeError(
        `offset: expected a non-negative integer, got ${describe(offset)}`,
        'offset',
      );
    }
    if (this.strides.length !== this.shape.length) {
      throw new ShapeError(
        `strides: expected ${this.shape.length} entries for shape ${formatShape(shape)}, got ${describe([...strides])}`,
        'strides',
      );
    }
    if (numel(shape) > 0) {
      // Negative strides walk backwards, so check both the lowest and the highest element.
      let first = offset;
      let last = offset;
      for (let i = 0; i < shape.length; i++) {
        const reach = (shape[i]! - 1) * strides[i]!;
        if (reach < 0) first += reach;
        else last += reach;
      }
      if (first < 0 || last >= storage.length) {
        throw new ShapeError(
          `shape: ${formatShape(shape)} with strides ${formatShape(strides)} and offset ${offset} reaches elements ${first}..${last}, but storage holds ${storage.length}`,
          'shape',
        );
      }
    }
  }

  // ---- construction ----------------------------------------------------------------------

  /**
   * A CPU tensor over `data`. A TypedArray is used without copying (its dtype is implied:
   * Uint16Array means f16 unless `dtype` says bf16); a number[] is converted to `dtype`
   * (default f32), f16/bf16 being encoded with round-to-nearest-even.
   */
  static from(data: TypedArray | readonly number[], shape?: Shape, dtype?: DType): Tensor {
    if (!Array.isArray(data) && !ArrayBuffer.isView(data)) {
      throw new ValueError(
        `data: expected a number[] or a TypedArray, got ${describe(data)}`,
        'data',
      );
    }
    const sh = shape === undefined ? [data.length] : assertShape(shape);
    if (numel(sh) !== data.length) {
      throw new ShapeError(
        `shape: ${formatShape(sh)} holds ${numel(sh)} elements but data has ${data.length}`,
        'shape',
      );
    }
    if (Array.isArray(data)) {
      const dt = dtype === undefined ? 'f32' : assertDType(dtype);
      return new Tensor(new CpuStorage(dt, fromNumbers(dt, data, sh)), sh);
    }
    const arr = data as TypedArray;
    const implied = dtypeOfArray(arr);
    let dt = implied;
    if (dtype !== undefined) {
      dt = assertDType(dtype);
      const compatible = dt === implied || (dt === 'bf16' && implied === 'f16');
      if (!compatible) {
        throw new DTypeError(
          `dtype: ${dt} needs ${storageName(dt)} data, got ${describe(arr)}`,
          'dtype',
        );
      }
    }
    return new Tensor(new CpuStorage(dt, arr), sh);
  }

  static zeros(shape: Shape, dtype: DType = 'f32'): Tensor {
    const sh = assertShape(shape);
    const dt = assertDType(dtype);
    return new Tensor(new CpuStorage(dt, allocStorage(dt, numel(sh), sh)), sh);
  }

  static full(shape: Shape, value: number, dtype: DType = 'f32'): Tensor {
    const t = Tensor.zeros(shape, dtype);
    if (isIntDType(t.dtype)) assertIntFits(t.dtype, value, 'value');
    else if (typeof value !== 'number') {
      throw new ValueError(`value: ${t.dtype} cannot hold ${describe(value)}`, 'value');
    }
    (t.storage as CpuStorage).data.fill(encodeScalar(t.dtype, value));
    return t;
  }

  // ---- properties -------------------------------------------------------------------------

  get dtype(): DType {
    return this.storage.dtype;
  }
  get device(): string {
    return this.storage.device;
  }
  get ndim(): number {
    return this.shape.length;
  }
  get size(): number {
    return numel(this.shape);
  }

  isContiguous(): boolean {
    // Row-major strides built from the last dimension, extents of 0 or 1 ignored; no arrays
    // made (views call this on every op: it was 2% of GPT decoding's host time on WebGPU).
    let want = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      const d = this.shape[i]!;
      if (d > 1 && this.strides[i] !== want) return false;
      want *= d;
    }
    return true;
  }

  // ---- views ------------------------------------------------------------------------------

  /** Same elements, new shape (one entry may be -1). Copies first if the layout needs it. */
  reshape(shape: Shape): Tensor {
    const dims = [...assertArray(shape, 'shape')];
    const infer = dims.indexOf(-1);
    if (infer >= 0) {
      const rest = numel(dims.filter((_, i) => i !== infer));
      if (rest === 0 || this.size % rest !== 0) {
        throw new ShapeError(
          `shape: cannot infer -1 in ${formatShape(dims)} for ${this.size} elements`,
          'shape',
        );
      }
      dims[infer] = this.size / rest;
    }
    const sh = assertShape(dims);
    if (numel(sh) !== this.size) {
      throw new ShapeError(
        `shape: ${formatShape(sh)} holds ${numel(sh)} elements, tensor ${formatShape(this.shape)} has ${this.size}`,
        'shape',
      );
    }
    const src = this.isContiguous() ? this : this.contiguous();
    return new Tensor(src.storage, sh, contiguousStrides(sh), src.offset);
  }

  permute(dims: readonly number[]): Tensor {
    const nd = this.ndim;
    const norm = assertArray(dims, 'dims').map((d) => normAxis(d, nd, 'dims'));
    if (norm.length !== nd || new Set(norm).size !== nd) {
      throw new ShapeError(
        `dims: expected a permutation of 0..${nd - 1}, got ${describe([...dims])}`,
        'dims',
      );
    }
    return new Tensor(
      this.storage,
      norm.map((d) => this.shape[d]!),
      norm.map((d) => this.strides[d]!),
      this.offset,
    );
  }

  transpose(dim0: number, dim1: number): Tensor {
    const a = normAxis(dim0, this.ndim, 'dim0');
    const b = normAxis(dim1, this.ndim, 'dim1');
    const perm = [...this.shape.keys()];
    perm[a] = b;
    perm[b] = a;
    return this.permute(perm);
  }

  /** Elements start..end-1 (negative indices count from the end) along `dim`, step > 0. */
  slice(
    dim: number,
    start: number,
    end: number = this.shape[normAxis(dim, this.ndim)]!,
    step = 1,
  ): Tensor {
    const d = normAxis(dim, this.ndim);
    const n = this.shape[d]!;
    if (!Number.isInteger(step) || step <= 0) {
      throw new ValueError(`step: expected a positive integer, got ${describe(step)}`, 'step');
    }
    if (!Number.isInteger(start) || !Number.isInteger(end)) {
      throw new ValueError(
        `start/end: expected integers, got ${describe(start)}, ${describe(end)}`,
        'start',
      );
    }
    const s = Math.min(Math.max(start < 0 ? start + n : start, 0), n);
    const e = Math.min(Math.max(end < 0 ? end + n : end, s), n);
    const shape = [...this.shape];
    const strides = [...this.strides];
    shape[d] = Math.ceil((e - s) / step);
    strides[d] = this.strides[d]! * step;
    const offset = shape[d] === 0 ? this.offset : this.offset + s * this.strides[d]!;
    return new Tensor(this.storage, shape, strides, offset);
  }

  /** A contiguous tensor with these elements (this one if already contiguous at offset 0). */
  contiguous(): Tensor {
    if (this.isContiguous() && this.offset === 0 && this.storage.length === this.size) return this;
    const src = this.cpuStorage('contiguous').data;
    const out = allocStorage(this.dtype, this.size, this.shape);
    this.gather(src, out);
    return new Tensor(new CpuStorage(this.dtype, out), this.shape);
  }

  // ---- element access and conversion ------------------------------------------------------

  /** Element at `index` (decoded to a number). */
  get(...index: number[]): number {
    if (index.length !== this.ndim) {
      throw new ShapeError(`index: expected ${this.ndim} indices, got ${index.length}`, 'index');
    }
    let at = this.offset;
    for (let i = 0; i < index.length; i++) {
      const k = index[i]!;
      if (!Number.isInteger(k) || k < 0 || k >= this.shape[i]!) {
        throw new ShapeError(
          `index: entry ${i} must be in [0, ${this.shape[i]! - 1}], got ${describe(k)}`,
          'index',
        );
      }
      at += k * this.strides[i]!;
    }
    return decodeScalar(this.dtype, this.cpuStorage('get').data[at]!);
  }

  /**
   * The raw storage elements in row-major order (f16/bf16 as bit patterns). A view, not a
   * copy, when the tensor is already contiguous: do not write into it.
   */
  data<D extends DType = DType>(): StorageArrayOf[D] {
    const src = this.cpuStorage('data').data;
    if (this.isContiguous()) {
      return (
        this.offset === 0 && src.length === this.size
          ? src
          : src.subarray(this.offset, this.offset + this.size)
      ) as StorageArrayOf[D];
    }
    const out = allocStorage(this.dtype, this.size, this.shape);
    this.gather(src, out);
    return out as StorageArrayOf[D];
  }

  /** Decoded values as a new Float32Array (always a copy, safe to write). */
  toFloat32Array(): Float32Array {
    return this.decodeInto(allocStorage('f32', this.size, this.shape));
  }

  /** Decoded values as a new Float64Array (always a copy, safe to write). */
  toFloat64Array(): Float64Array {
    return this.decodeInto(allocStorage('f64', this.size, this.shape));
  }

  /**
   * A contiguous CPU tensor in `dtype` (floats round to nearest even; to an integer dtype a cast
   * truncates toward zero, and a value outside the dtype's range, NaN or an infinity is a
   * ValueError naming `data`, never wrapped). With an unchanged dtype this is `contiguous()`,
   * which may return this tensor.
   */
  astype(dtype: DType): Tensor {
    const dt = assertDType(dtype);
    if (dt === this.dtype) return this.contiguous();
    const values = this.toFloat64Array();
    if (isIntDType(dt)) {
      for (let i = 0; i < values.length; i++) values[i] = Math.trunc(values[i]!);
    }
    return new Tensor(new CpuStorage(dt, fromNumbers(dt, values, this.shape)), this.shape);
  }

  /** This tensor on the CPU (itself when already there). Other devices override through their storage. */
  async toCpu(): Promise<Tensor> {
    if (this.device === 'cpu') return this;
    const s = this.storage as Storage & { read?: () => Promise<TypedArray> };
    if (!s.read)
      throw new DeviceError(`tensor: device ${this.device} cannot be read back`, 'tensor');
    const data = await s.read();
    return new Tensor(new CpuStorage(this.dtype, data), this.shape, this.strides, this.offset);
  }

  dispose(): void {
    this.storage.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, ${formatShape(this.shape)}, ${this.device})`;
  }

  // ---- internals --------------------------------------------------------------------------

  private cpuStorage(op: string): CpuStorage {
    if (!(this.storage instanceof CpuStorage)) {
      throw new DeviceError(
        `${op}: needs a cpu tensor, got one on ${this.device} (use await tensor.toCpu())`,
        'tensor',
      );
    }
    return this.storage;
  }

  private decodeInto<T extends Float32Array | Float64Array>(out: T): T {
    const raw = this.data();
    if (this.dtype === 'f16' || this.dtype === 'bf16') {
      return decodeHalfArray(this.dtype, raw as Uint16Array, out);
    }
    out.set(raw as ArrayLike<number>);
    return out;
  }

  /** Copies the strided elements into `out` in row-major order. */
  private gather(src: TypedArray, out: TypedArray): void {
    const nd = this.ndim;
    const n = this.size;
    if (n === 0) return;
    if (nd === 0) {
      out[0] = src[this.offset]!;
      return;
    }
    const idx = new Array<number>(nd).fill(0);
    const last = nd - 1;
    const lastN = this.shape[last]!;
    const lastS = this.strides[last]!;
    let base = this.offset;
    for (let o = 0; o < n; o += lastN) {
      for (let j = 0; j < lastN; j++) out[o + j] = src[base + j * lastS]!;
      // advance the outer multi-index (odometer), keeping `base` in step.
      for (let d = last - 1; d >= 0; d--) {
        idx[d]!++;
        base += this.strides[d]!;
        if (idx[d]! < this.shape[d]!) break;
        base -= idx[d]! * this.strides[d]!;
        idx[d] = 0;
      }
    }
  }
}

/** Strides in elements: integers (negative ones walk backwards, bounds-checked both ways). */
function assertStrides(strides: unknown): number[] {
  const bad = Array.isArray(strides) ? strides.findIndex((s) => !Number.isSafeInteger(s)) : 0;
  if (bad >= 0) {
    const entry = Array.isArray(strides) ? ` (entry ${bad} is ${describe(strides[bad])})` : '';
    throw new ShapeError(
      `strides: expected an array of integers, got ${describe(strides)}${entry}`,
      'strides',
    );
  }
  return [...(strides as number[])];
}

function assertArray(value: unknown, argument: string): readonly number[] {
  if (!Array.isArray(value)) {
    throw new ShapeError(`${argument}: expected an array, got ${describe(value)}`, argument);
  }
  return value;
}

function storageName(dt: DType): string {
  return allocStorage(dt, 0).constructor.name;
}

function encodeScalar(dt: DType, v: number): number {
  if (dt === 'f16') return f16ToBits(v);
  if (dt === 'bf16') return bf16ToBits(v);
  return v;
}

function decodeScalar(dt: DType, raw: number): number {
  if (dt === 'f16') return bitsToF16(raw);
  if (dt === 'bf16') return bitsToBf16(raw);
  return raw;
}

/**
 * Numbers (a number[] or a decoded TypedArray) as `dt`'s storage: halves round to nearest even;
 * integer dtypes take only values they hold exactly (assertIntFits), never wrapping.
 */
function fromNumbers(
  dt: DType,
  values: ArrayLike<number>,
  shape: readonly number[] = [values.length],
): TypedArray {
  const out = allocStorage(dt, values.length, shape);
  if (dt === 'f16' || dt === 'bf16') return encodeHalfArray(dt, values, out as Uint16Array);
  if (isIntDType(dt)) {
    for (let i = 0; i < values.length; i++) out[i] = assertIntFits(dt, values[i], 'data', i);
    return out;
  }
  for (let i = 0; i < values.length; i++) out[i] = values[i]!;
  return out;
}
