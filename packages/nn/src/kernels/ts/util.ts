import { CpuStorage, DTypeError, formatShape, numel, ShapeError, Tensor } from '@attnkit/tensor';

export type Floats = Float32Array | Float64Array;
export type FloatDType = 'f32' | 'f64';

/** The ts kernels compute in the tensor's own precision: f32 or f64, cpu tensors only. */
export function floatsOf(t: Tensor, op: string, argument = 'x'): Floats {
  if (t.dtype !== 'f32' && t.dtype !== 'f64')
    throw new DTypeError(
      `${op}: backend 'ts' takes f32 or f64 tensors, got ${argument} in ${t.dtype}`,
      argument,
    );
  return t.data() as Floats;
}

export function alloc(dtype: FloatDType, n: number): Floats {
  return dtype === 'f64' ? new Float64Array(n) : new Float32Array(n);
}

export function tensorOf(data: Floats, shape: readonly number[]): Tensor {
  return new Tensor(new CpuStorage(data instanceof Float64Array ? 'f64' : 'f32', data), shape);
}

export function dtypeOf(t: Tensor): FloatDType {
  return t.dtype as FloatDType;
}

export function broadcastShapes(op: string, a: readonly number[], b: readonly number[]): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const da = a[a.length - n + i] ?? 1;
    const db = b[b.length - n + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1)
      throw new ShapeError(
        `${op}: shapes ${formatShape(a)} and ${formatShape(b)} do not broadcast (dim ${i}: ${da} vs ${db})`,
        op,
      );
    out.push(da === 1 ? db : da);
  }
  return out;
}

/**
 * For each element of `big` (row-major), the flat index of the element of `small` it reads
 * when `small` is broadcast to `big` (numpy rules: missing leading dims and size-1 dims).
 */
export function broadcastIndex(small: readonly number[], big: readonly number[]): Int32Array {
  const n = numel(big);
  const out = new Int32Array(n);
  const nd = big.length;
  const off = nd - small.length;
  const strides = new Array<number>(nd).fill(0);
  let s = 1;
  for (let i = small.length - 1; i >= 0; i--) {
    if (small[i] !== 1) strides[i + off] = s;
    s *= small[i]!;
  }
  const idx = new Array<number>(nd).fill(0);
  let at = 0;
  for (let i = 0; i < n; i++) {
    out[i] = at;
    for (let d = nd - 1; d >= 0; d--) {
      idx[d]!++;
      at += strides[d]!;
      if (idx[d]! < big[d]!) break;
      at -= idx[d]! * strides[d]!;
      idx[d] = 0;
    }
  }
  return out;
}

export function assertBroadcastsTo(op: string, small: readonly number[], big: readonly number[]) {
  const ok =
    small.length <= big.length &&
    small.every((d, i) => d === 1 || d === big[big.length - small.length + i]);
  if (!ok)
    throw new ShapeError(
      `${op}: ${formatShape(small)} does not broadcast to ${formatShape(big)}`,
      op,
    );
}

/** Rows of the last axis: [rows, cols]. */
export function rowsCols(shape: readonly number[]): [number, number] {
  const cols = shape[shape.length - 1] ?? 1;
  return [cols === 0 ? 0 : numel(shape) / cols, cols];
}
