import { describe, expect, test } from 'vitest';
import { allocStorage, type DType, type TypedArray } from './dtype.js';
import {
  AllocationError,
  AttnkitError,
  DeviceError,
  DTypeError,
  ShapeError,
  ValueError,
} from './errors.js';
import { bf16ToBits, bitsToF16, f16ToBits } from './half.js';
import { Rng } from './rng.js';
import { contiguousStrides, numel } from './shape.js';
import { CpuStorage, type Storage } from './storage.js';
import { Tensor } from './tensor.js';

const rng = new Rng(4242);

/** Error class and argument name of what `fn` throws. */
function errorOf(fn: () => unknown): [unknown, string | undefined] | undefined {
  try {
    fn();
  } catch (err) {
    return [(err as Error).constructor, (err as ValueError).argument];
  }
  return undefined;
}

/** Reference: element at a multi-index of a row-major array. */
function at(values: ArrayLike<number>, shape: readonly number[], index: readonly number[]): number {
  const strides = contiguousStrides(shape);
  return values[index.reduce((s, k, i) => s + k * strides[i]!, 0)]!;
}

/** All multi-indices of `shape`, row-major. */
function* indices(shape: readonly number[]): Generator<number[]> {
  if (numel(shape) === 0) return;
  const idx = new Array<number>(shape.length).fill(0);
  while (true) {
    yield [...idx];
    let d = shape.length - 1;
    while (d >= 0 && ++idx[d]! === shape[d]!) idx[d--] = 0;
    if (d < 0) return;
  }
}

/** Random values exactly representable in f32, never zero. */
function randomValues(n: number): number[] {
  return Array.from({ length: n }, () =>
    Math.fround(rng.normal() + (rng.uniform() < 0.5 ? 3 : -3)),
  );
}

describe('construction', () => {
  test('from number[] encodes in the asked dtype (f32 by default)', () => {
    const vals = randomValues(6);
    const t = Tensor.from(vals, [2, 3]);
    expect(t.dtype).toBe('f32');
    expect([...t.shape]).toEqual([2, 3]);
    expect([...t.strides]).toEqual([3, 1]);
    expect([...t.toFloat64Array()]).toEqual(vals);
    const h = Tensor.from([1 + 2 ** -11, 1 + 3 * 2 ** -11, 1e6], [3], 'f16');
    expect([...h.data()]).toEqual([0x3c00, 0x3c02, 0x7c00]);
    const i = Tensor.from([-3, 7], undefined, 'i32');
    expect(i.data()).toBeInstanceOf(Int32Array);
    expect([...i.shape]).toEqual([2]);
  });

  test('from a TypedArray shares it; Uint16Array is f16 unless told bf16', () => {
    const arr = new Float64Array(randomValues(4));
    const t = Tensor.from(arr, [2, 2]);
    expect(t.dtype).toBe('f64');
    arr[3] = 99;
    expect(t.get(1, 1)).toBe(99);
    const bits = new Uint16Array([bf16ToBits(1.5), bf16ToBits(-3)]);
    expect(Tensor.from(bits).dtype).toBe('f16');
    const bf = Tensor.from(bits, [2], 'bf16');
    expect(bf.dtype).toBe('bf16');
    expect([...bf.toFloat32Array()]).toEqual([1.5, -3]);
  });

  test('zeros and full', () => {
    const z = Tensor.zeros([2, 0, 3], 'i8');
    expect(z.size).toBe(0);
    expect(z.data().length).toBe(0);
    const f = Tensor.full([3], 65520, 'f16');
    expect([...f.data()]).toEqual([0x7c00, 0x7c00, 0x7c00]);
    const g = Tensor.full([2, 2], -7, 'i32');
    expect([...g.data()]).toEqual([-7, -7, -7, -7]);
    const s = Tensor.full([], Math.PI, 'f64');
    expect(s.ndim).toBe(0);
    expect(s.get()).toBe(Math.PI);
  });

  test('construction errors name the argument', () => {
    expect(errorOf(() => Tensor.from([1, 2, 3], [2, 2]))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => Tensor.from([1, 2], [2.5] as never))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => Tensor.from(new Float32Array(2), [2], 'f64'))).toEqual([
      DTypeError,
      'dtype',
    ]);
    expect(errorOf(() => Tensor.from(new Int32Array(2), [2], 'bf16'))).toEqual([
      DTypeError,
      'dtype',
    ]);
    expect(errorOf(() => Tensor.from([1, 2], [2], 'f8' as never))).toEqual([DTypeError, 'dtype']);
    expect(errorOf(() => Tensor.from([1, Number.NaN], [2], 'i32'))).toEqual([ValueError, 'data']);
    expect(errorOf(() => Tensor.from(new Int16Array(2) as never))).toEqual([DTypeError, 'data']);
    expect(errorOf(() => Tensor.from(null as never))).toEqual([ValueError, 'data']);
    expect(errorOf(() => Tensor.zeros([-1]))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => Tensor.zeros([2], 'float32' as never))).toEqual([DTypeError, 'dtype']);
    expect(errorOf(() => Tensor.full([2], Number.NaN, 'u8'))).toEqual([ValueError, 'value']);
    const storage = new CpuStorage('f32', new Float32Array(6));
    expect(errorOf(() => new Tensor(storage, [2, 3], [3]))).toEqual([ShapeError, 'strides']);
    expect(errorOf(() => new Tensor(storage, [2, 3], [3, 1], 1))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => new Tensor(storage, [2, 3], [-3, 1], 2))).toEqual([ShapeError, 'shape']);
    expect(new Tensor(storage, [2, 3], [-3, 1], 3).get(1, 2)).toBe(0); // reversed rows fit
  });
});

describe('integer tensors hold exactly what they are given (issue 9: no silent wrapping)', () => {
  const ranges = {
    u8: ['0..255', 0, 255],
    i8: ['-128..127', -128, 127],
    i32: ['-2^31..2^31-1 (-2147483648..2147483647)', -(2 ** 31), 2 ** 31 - 1],
  } as const;

  test("the audit's reproducer: Tensor.from([300], [1], 'u8') throws instead of wrapping to 44", () => {
    expect(() => Tensor.from([300], [1], 'u8')).toThrow(ValueError);
    expect(() => Tensor.from([300], [1], 'u8')).toThrow(
      'data: u8 holds integers in 0..255, got 300 at index 0',
    );
    expect(errorOf(() => Tensor.from([300], [1], 'u8'))).toEqual([ValueError, 'data']);
  });

  for (const [dt, [text, lo, hi]] of Object.entries(ranges) as [
    'u8' | 'i8' | 'i32',
    readonly [string, number, number],
  ][]) {
    test(`${dt}: the range ${text} is kept exactly; outside, fractions, NaN and infinities throw`, () => {
      const ok = Tensor.from([lo, 0, hi], [3], dt);
      expect([...ok.data()]).toEqual([lo, 0, hi]);
      const bad = [lo - 1, hi + 1, 0.5, -1.5, lo + 0.25, Number.NaN, Infinity, -Infinity];
      for (const v of bad) {
        const fn = () => Tensor.from([0, 1, v], [3], dt);
        expect(errorOf(fn)).toEqual([ValueError, 'data']);
        const shown = Number.isNaN(v) ? 'NaN' : String(v);
        expect(fn).toThrow(`data: ${dt} holds integers in ${text}, got ${shown} at index 2`);
        // Tensor.full checks its value the same way.
        expect(errorOf(() => Tensor.full([2], v, dt))).toEqual([ValueError, 'value']);
        expect(() => Tensor.full([2], v, dt)).toThrow(
          `value: ${dt} holds integers in ${text}, got ${shown}`,
        );
      }
      expect([...Tensor.full([2], hi, dt).data()]).toEqual([hi, hi]);
      // The first offending element is the one named.
      expect(() => Tensor.from([0, lo - 1, 0.5], [3], dt)).toThrow(/at index 1$/);
      // Not numbers at all.
      expect(() => Tensor.from(['3' as never], [1], dt)).toThrow(/got "3" at index 0/);
      expect(() => Tensor.full([1], '3' as never, dt)).toThrow(ValueError);
    });
  }

  test('an existing TypedArray of the dtype is taken as is (no copy, no check)', () => {
    const u8 = new Uint8Array([0, 255, 44]);
    const t = Tensor.from(u8, [3], 'u8');
    expect(t.data()).toBe(u8);
    const i8 = new Int8Array([-128, 127]);
    expect(Tensor.from(i8).data()).toBe(i8);
  });

  test('float dtypes are unchanged: they hold NaN, infinities and fractions', () => {
    const t = Tensor.from([Number.NaN, Infinity, 0.5, 300], [4], 'f32');
    expect([...t.data()]).toEqual([Number.NaN, Infinity, 0.5, 300]);
    expect(Number.isNaN(Tensor.full([1], Number.NaN, 'f64').get(0))).toBe(true);
  });
});

describe('shapes, strides and offsets are non-negative integers (issue 9)', () => {
  const storage = new CpuStorage('f32', new Float32Array(6));
  const badShapes = [[-1, 3], [2, 1.5], [Number.NaN, 1], [Infinity, 1], [-Infinity], [2, '3']];

  test('the constructor rejects negative, fractional, NaN and infinite extents (ShapeError on shape)', () => {
    for (const shape of badShapes) {
      expect(errorOf(() => new Tensor(storage, shape as never))).toEqual([ShapeError, 'shape']);
      expect(
        errorOf(() => new Tensor(storage, shape as never, [1, 1].slice(0, shape.length))),
      ).toEqual([ShapeError, 'shape']);
    }
    // A negative extent used to make a tensor of size -3 (the bounds check saw no elements).
    expect(() => new Tensor(storage, [-1, 3], [3, 1])).toThrow(
      'shape: expected an array of non-negative integers, got [-1, 3] (entry 0 is -1)',
    );
    expect(errorOf(() => new Tensor(storage, 6 as never))).toEqual([ShapeError, 'shape']);
    // Zero extents and rank 0 stay legal.
    expect(new Tensor(storage, [0, 3]).size).toBe(0);
    expect(new Tensor(storage, []).get()).toBe(0);
  });

  test('the constructor rejects fractional, NaN and infinite strides (ShapeError on strides)', () => {
    for (const bad of [0.5, Number.NaN, Infinity, -Infinity, 1.5]) {
      const fn = () => new Tensor(storage, [2, 3], [3, bad]);
      expect(errorOf(fn)).toEqual([ShapeError, 'strides']);
      expect(fn).toThrow(/^strides: expected an array of integers, got \[3, .*\] \(entry 1 is /);
    }
    // Used to read between elements: a [3] view with stride 0.5 gave [0, undefined -> NaN, 1].
    expect(errorOf(() => new Tensor(storage, [3], [0.5]))).toEqual([ShapeError, 'strides']);
    expect(errorOf(() => new Tensor(storage, [2, 3], 'x' as never))).toEqual([
      ShapeError,
      'strides',
    ]);
    // Negative integer strides walk backwards and stay legal (bounds-checked both ways).
    expect(new Tensor(storage, [3], [-2], 4).size).toBe(3);
    expect(new Tensor(storage, [2, 3], [0, 1]).size).toBe(6); // broadcast rows
  });

  test('the constructor rejects a negative, fractional or NaN offset (ShapeError on offset)', () => {
    for (const bad of [-1, 0.5, Number.NaN, Infinity]) {
      expect(errorOf(() => new Tensor(storage, [2], [1], bad))).toEqual([ShapeError, 'offset']);
    }
    // Even for an empty view, which the bounds check does not see.
    expect(errorOf(() => new Tensor(storage, [0], [1], -1))).toEqual([ShapeError, 'offset']);
  });

  test('Tensor.from, zeros, full and the views check shapes the same way', () => {
    for (const shape of badShapes) {
      expect(errorOf(() => Tensor.from([1, 2, 3], shape as never))).toEqual([ShapeError, 'shape']);
      expect(errorOf(() => Tensor.zeros(shape as never))).toEqual([ShapeError, 'shape']);
      expect(errorOf(() => Tensor.full(shape as never, 1))).toEqual([ShapeError, 'shape']);
    }
    const t = Tensor.from([1, 2, 3, 4, 5, 6], [2, 3]);
    expect(errorOf(() => t.reshape([3, -2]))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => t.reshape([1.5, 4]))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => t.reshape([Number.NaN, 6]))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => t.reshape([-3, -2]))).toEqual([ShapeError, 'shape']);
  });
});

describe('views', () => {
  const shape = [2, 3, 4];
  const vals = randomValues(24);
  const base = () => Tensor.from(vals, shape);

  test('reshape with -1 shares contiguous storage', () => {
    const t = base();
    const r = t.reshape([-1, 4]);
    expect([...r.shape]).toEqual([6, 4]);
    expect(r.storage).toBe(t.storage);
    expect(r.get(4, 1)).toBe(vals[17]);
    expect([...t.reshape([4, -1, 3]).shape]).toEqual([4, 2, 3]);
    expect([...t.reshape([24]).toFloat64Array()]).toEqual(vals);
  });

  test('reshape of a non-contiguous view copies in row-major order', () => {
    const tt = base().transpose(0, 2); // [4, 3, 2]
    const r = tt.reshape([12, 2]);
    expect(r.storage).not.toBe(tt.storage);
    for (const [i, j] of indices([12, 2])) {
      const a = Math.floor(i! / 3);
      const b = i! % 3;
      expect(r.get(i!, j!)).toBe(at(vals, shape, [j!, b, a]));
    }
  });

  test('reshape errors', () => {
    const t = base();
    expect(errorOf(() => t.reshape([5, -1]))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => t.reshape([0, -1]))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => t.reshape([-1, -1]))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => t.reshape([5, 5]))).toEqual([ShapeError, 'shape']);
    expect(errorOf(() => t.reshape(24 as never))).toEqual([ShapeError, 'shape']);
  });

  test('permute moves axes (negative axes allowed)', () => {
    const p = base().permute([2, -3, 1]);
    expect([...p.shape]).toEqual([4, 2, 3]);
    expect([...p.strides]).toEqual([1, 12, 4]);
    expect(p.isContiguous()).toBe(false);
    for (const [k, i, j] of indices(p.shape))
      expect(p.get(k!, i!, j!)).toBe(at(vals, shape, [i!, j!, k!]));
  });

  test('permute errors', () => {
    const t = base();
    expect(errorOf(() => t.permute([0, 0, 1]))).toEqual([ShapeError, 'dims']);
    expect(errorOf(() => t.permute([0, 1]))).toEqual([ShapeError, 'dims']);
    expect(errorOf(() => t.permute([0, 1, 3]))).toEqual([ValueError, 'dims']);
    expect(errorOf(() => t.permute('012' as never))).toEqual([ShapeError, 'dims']);
  });

  test('transpose swaps two axes', () => {
    const t = base().transpose(-1, 0);
    expect([...t.shape]).toEqual([4, 3, 2]);
    for (const [a, b, c] of indices(t.shape))
      expect(t.get(a!, b!, c!)).toBe(at(vals, shape, [c!, b!, a!]));
    expect(errorOf(() => base().transpose(3, 0))).toEqual([ValueError, 'dim0']);
    expect(errorOf(() => base().transpose(0, -4))).toEqual([ValueError, 'dim1']);
    expect(errorOf(() => base().transpose(0.5, 1))).toEqual([ValueError, 'dim0']);
  });

  test('slice with steps and negative indices matches Python-style slicing', () => {
    const n = 10;
    const v = randomValues(n);
    const t = Tensor.from(v);
    const pySlice = (start: number, end: number, step: number) => {
      const s = Math.min(Math.max(start < 0 ? start + n : start, 0), n);
      const e = Math.min(Math.max(end < 0 ? end + n : end, 0), n);
      const out: number[] = [];
      for (let i = s; i < e; i += step) out.push(v[i]!);
      return out;
    };
    for (const [s, e, st] of [
      [0, 10, 1],
      [1, 9, 3],
      [-3, -1, 1],
      [-100, 100, 4],
      [7, 2, 1],
      [-1, 10, 2],
      [3, 3, 1],
      [0, -11, 1],
    ] as const) {
      expect([...t.slice(0, s, e, st).toFloat64Array()], `${s}:${e}:${st}`).toEqual(
        pySlice(s, e, st),
      );
    }
    expect([...t.slice(0, 6).toFloat64Array()]).toEqual(v.slice(6)); // end defaults to the length
  });

  test('slice of a view along several dims', () => {
    const s = base().transpose(0, 2).slice(0, 1, 4, 2).slice(-2, -2).slice(2, 1); // [2, 2, 1]
    expect([...s.shape]).toEqual([2, 2, 1]);
    for (const [a, b, c] of indices(s.shape)) {
      expect(s.get(a!, b!, c!)).toBe(at(vals, shape, [1 + c!, 1 + b!, 1 + 2 * a!]));
    }
    const empty = base().slice(1, 2, 1);
    expect([...empty.shape]).toEqual([2, 0, 4]);
    expect(empty.contiguous().size).toBe(0);
  });

  test('slice errors', () => {
    const t = base();
    expect(errorOf(() => t.slice(0, 0, 2, 0))).toEqual([ValueError, 'step']);
    expect(errorOf(() => t.slice(0, 0, 2, -1))).toEqual([ValueError, 'step']);
    expect(errorOf(() => t.slice(0, 0.5, 2))).toEqual([ValueError, 'start']);
    expect(errorOf(() => t.slice(3, 0, 1))).toEqual([ValueError, 'dim']);
  });
});

describe('copies and access', () => {
  const shape = [3, 4];
  const vals = randomValues(12);

  test('contiguous() returns itself when possible, else a row-major copy', () => {
    const t = Tensor.from(vals, shape);
    expect(t.contiguous()).toBe(t);
    const tt = t.transpose(0, 1);
    const c = tt.contiguous();
    expect(c.isContiguous()).toBe(true);
    expect(c.storage).not.toBe(t.storage);
    expect([...c.strides]).toEqual([3, 1]);
    for (const [i, j] of indices(c.shape)) expect(c.get(i!, j!)).toBe(at(vals, shape, [j!, i!]));
    // contiguous but offset into a larger storage: copied to a storage of its own
    const rows = t.slice(0, 1);
    expect(rows.isContiguous()).toBe(true);
    const rc = rows.contiguous();
    expect(rc).not.toBe(rows);
    expect(rc.storage.length).toBe(8);
    expect([...rc.toFloat64Array()]).toEqual(vals.slice(4));
  });

  test('get() reads through strides and offsets; bad indices are ShapeErrors on index', () => {
    const t = Tensor.from(vals, shape).slice(1, 1, 4, 2); // [3, 2]
    expect(t.get(2, 1)).toBe(vals[2 * 4 + 3]);
    expect(errorOf(() => t.get(1))).toEqual([ShapeError, 'index']);
    expect(errorOf(() => t.get(3, 0))).toEqual([ShapeError, 'index']);
    expect(errorOf(() => t.get(-1, 0))).toEqual([ShapeError, 'index']);
    expect(errorOf(() => t.get(0, 0.5))).toEqual([ShapeError, 'index']);
    const h = Tensor.from([1.5, -0.25], [2], 'f16');
    expect(h.get(1)).toBe(-0.25);
  });

  test('data() is a view when contiguous and a copy otherwise', () => {
    const arr = new Float32Array(vals);
    const t = Tensor.from(arr, shape);
    expect(t.data()).toBe(arr);
    const rows = t.slice(0, 1, 3);
    const rv = rows.data();
    expect(rv.buffer).toBe(arr.buffer);
    expect(rv.byteOffset).toBe(4 * 4);
    expect([...rv]).toEqual(vals.slice(4, 12));
    const cols = t.slice(1, 1, 3);
    const cv = cols.data();
    expect(cv.buffer).not.toBe(arr.buffer);
    expect([...cv]).toEqual([vals[1], vals[2], vals[5], vals[6], vals[9], vals[10]]);
    cv[0] = 1234;
    expect(t.get(0, 1)).toBe(vals[1]);
    // f16 data() is the raw bit patterns
    const h = Tensor.from([1, -2], [2], 'f16');
    expect([...h.data()]).toEqual([0x3c00, 0xc000]);
  });

  test('toFloat32Array / toFloat64Array always copy', () => {
    const arr = new Float64Array(vals);
    const t = Tensor.from(arr, shape);
    const c = t.toFloat64Array();
    expect(c).not.toBe(arr);
    c[0] = 0;
    expect(t.get(0, 0)).toBe(vals[0]);
    expect([...t.transpose(0, 1).toFloat32Array()]).toEqual(
      [...indices([4, 3])].map(([i, j]) => at(vals, shape, [j!, i!])),
    );
  });

  test('astype converts with rounding and truncation, never wrapping', () => {
    const wide = [1 + 2 ** -11 + 2 ** -30, 1 + 2 ** -11, 70000, -2.7, 2.7];
    const t = Tensor.from(new Float64Array(wide));
    expect([...t.astype('f16').data()]).toEqual(wide.map(f16ToBits));
    expect([...t.astype('bf16').data()]).toEqual(wide.map(bf16ToBits));
    expect([...t.astype('i32').data()]).toEqual([1, 1, 70000, -2, 2]);
    // 70000 is outside u8 (it used to wrap to 112) and -2 outside it too (it used to be 254).
    expect(() => t.astype('u8')).toThrow('data: u8 holds integers in 0..255, got 70000 at index 2');
    expect(() => t.astype('i8')).toThrow('data: i8 holds integers in -128..127, got 70000');
    expect([...Tensor.from([255.9, -0.5, 0], [3], 'f64').astype('u8').data()]).toEqual([255, 0, 0]);
    expect(() => Tensor.from([256], [1], 'f32').astype('u8')).toThrow(ValueError);
    expect(() => Tensor.from([2 ** 31], [1], 'f64').astype('i32')).toThrow(
      'data: i32 holds integers in -2^31..2^31-1 (-2147483648..2147483647), got 2147483648 at index 0',
    );
    expect(() => Tensor.from([Number.NaN], [1], 'f16').astype('i32')).toThrow(/got NaN at index 0/);
    expect([...Tensor.from([-128, 127], [2], 'i32').astype('i8').data()]).toEqual([-128, 127]);
    expect(() => Tensor.from([-129, 127], [2], 'i32').astype('i8')).toThrow(/got -129 at index 0/);
    expect(() => Tensor.from([1, 200], [2], 'u8').astype('i8')).toThrow(/got 200 at index 1/);
    expect([...t.astype('f32').data()]).toEqual(wide.map(Math.fround));
    const h = Tensor.from([0.1, -3], [2], 'f16');
    expect([...h.astype('f64').data()]).toEqual([bitsToF16(f16ToBits(0.1)), -3]);
    const view = Tensor.from(vals, shape).transpose(0, 1);
    const same = view.astype('f32');
    expect(same.isContiguous()).toBe(true);
    expect(same.get(3, 2)).toBe(view.get(3, 2));
    expect(errorOf(() => view.astype('int' as never))).toEqual([DTypeError, 'dtype']);
    expect(errorOf(() => Tensor.from([Number.POSITIVE_INFINITY]).astype('i8'))).toEqual([
      ValueError,
      'data',
    ]);
  });

  test('every dtype round-trips through a strided view', () => {
    const cases: [DType, TypedArray][] = [
      ['f64', new Float64Array(randomValues(12))],
      ['f32', new Float32Array(randomValues(12))],
      ['f16', new Uint16Array(randomValues(12).map(f16ToBits))],
      ['bf16', new Uint16Array(randomValues(12).map(bf16ToBits))],
      ['i32', Int32Array.from(randomValues(12), (x) => Math.trunc(x * 1e6))],
      ['i8', Int8Array.from(randomValues(12), (x) => Math.trunc(x * 20))],
      ['u8', Uint8Array.from(randomValues(12), (x) => Math.abs(Math.trunc(x * 40)))],
    ];
    for (const [dtype, arr] of cases) {
      const t = Tensor.from(arr, [3, 4], dtype).permute([1, 0]);
      expect(t.dtype).toBe(dtype);
      const d = t.data();
      expect(d.constructor).toBe(arr.constructor);
      for (const [i, j] of indices([4, 3])) expect(d[i! * 3 + j!], dtype).toBe(arr[j! * 4 + i!]);
    }
  });
});

describe('devices', () => {
  class FakeStorage implements Storage {
    readonly device = 'fake';
    readonly dtype = 'f32' as const;
    disposed = false;
    constructor(readonly values: Float32Array) {}
    get length(): number {
      return this.values.length;
    }
    dispose(): void {
      this.disposed = true;
    }
    async read(): Promise<Float32Array> {
      return this.values.slice();
    }
  }

  test('CPU-only operations refuse other devices with DeviceError on tensor', async () => {
    const vals = new Float32Array(randomValues(6));
    const storage = new FakeStorage(vals);
    const t = new Tensor(storage, [2, 3]);
    expect(t.device).toBe('fake');
    expect(errorOf(() => t.data())).toEqual([DeviceError, 'tensor']);
    expect(errorOf(() => t.get(0, 0))).toEqual([DeviceError, 'tensor']);
    expect(errorOf(() => t.transpose(0, 1).contiguous())).toEqual([DeviceError, 'tensor']);
    const cpu = await t.transpose(0, 1).toCpu();
    expect(cpu.device).toBe('cpu');
    expect(cpu.get(2, 1)).toBe(vals[5]);
    t.dispose();
    expect(storage.disposed).toBe(true);
    expect(t.toString()).toBe('Tensor(f32, [2, 3], fake)');
    const plain = Tensor.from([1]);
    expect(await plain.toCpu()).toBe(plain);
    const noRead = new Tensor({ device: 'x', dtype: 'f32', length: 1, dispose() {} }, [1]);
    await expect(noRead.toCpu()).rejects.toBeInstanceOf(DeviceError);
  });
});

describe('allocation beyond what the runtime can hold', () => {
  /** The error `fn` throws (fails the test when it returns). */
  function thrown(fn: () => unknown): AllocationError {
    try {
      fn();
    } catch (err) {
      return err as AllocationError;
    }
    throw new Error('expected a throw');
  }

  test('zeros / full / randn / rand of 10^12 elements: AllocationError naming shape, dtype, bytes', () => {
    // Before: the engine's bare RangeError "Invalid typed array length: 1000000000000".
    const cases: [() => unknown, string, number][] = [
      [() => Tensor.zeros([1e9, 1e3]), 'f32', 4e12],
      [() => Tensor.full([1e9, 1e3], 1, 'f64'), 'f64', 8e12],
      [() => Tensor.zeros([1e6, 1e6], 'u8'), 'u8', 1e12],
      [() => new Rng(1).randn([1e9, 1e3]), 'f32', 4e12],
      [() => new Rng(1).rand([1e9, 1e3], 'f64'), 'f64', 8e12],
      [() => new Rng(1).rand([1e9, 1e3], 'bf16'), 'bf16', 2e12],
      // randn draws halves in f64 first: that (larger) request is the one reported.
      [() => new Rng(1).randn([1e9, 1e3], 'f16'), 'f64', 8e12],
    ];
    for (const [fn, dtype, bytes] of cases) {
      const err = thrown(fn);
      expect(err).toBeInstanceOf(AllocationError);
      expect(err).toBeInstanceOf(AttnkitError);
      expect(err.name).toBe('AllocationError');
      expect(err.argument).toBe('shape');
      expect(err.shape).toEqual(dtype === 'u8' ? [1e6, 1e6] : [1e9, 1e3]);
      expect(err.dtype).toBe(dtype);
      expect(err.bytes).toBe(bytes);
      expect(err.message).toContain(`[${err.shape.join(', ')}] of ${dtype} needs ${bytes} bytes`);
      expect(err.message).toMatch(/[GT]iB\), more than this runtime can allocate \(.+\)$/);
    }
  });

  test('an element count past 2^53 is refused before the engine sees it', () => {
    const err = thrown(() => Tensor.zeros([2 ** 30, 2 ** 30, 2 ** 30]));
    expect(err).toBeInstanceOf(AllocationError);
    expect(err.message).toMatch(
      /^shape: \[1073741824, 1073741824, 1073741824\] of f32 needs 4\.952e\+27 bytes .*not a safe integer\)$/,
    );
  });

  test('allocStorage names the shape it is given; a bad length is a ValueError', () => {
    const err = thrown(() => allocStorage('i32', 1e12, [1e3, 1e9]));
    expect(err).toBeInstanceOf(AllocationError);
    expect(err.message).toMatch(/^shape: \[1000, 1000000000\] of i32 needs 4000000000000 bytes/);
    expect(errorOf(() => allocStorage('f32', -1))).toEqual([ValueError, 'length']);
    expect(errorOf(() => allocStorage('f32', 1.5))).toEqual([ValueError, 'length']);
    expect(allocStorage('f32', 3, [3])).toEqual(new Float32Array(3));
  });
});
