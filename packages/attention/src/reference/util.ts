import {
  DeviceError,
  DTypeError,
  describe,
  formatShape,
  isFloatDType,
  ShapeError,
  sameShape,
  Tensor,
  ValueError,
} from '@attnkit/tensor';

/** Throws `Err` with the package's message style: "argument: expected X, got Y". */
export function fail(
  Err: typeof ShapeError,
  argument: string,
  expected: string,
  got: unknown,
): never {
  throw new Err(
    `${argument}: expected ${expected}, got ${typeof got === 'string' ? got : describe(got)}`,
    argument,
  );
}

/**
 * Checks that `t` is a CPU float tensor (of `shape` when given) and decodes it to float64 in
 * row-major order, which is the arithmetic every reference runs in.
 */
export function readF64(t: unknown, name: string, shape?: readonly number[]): Float64Array {
  const tt = t as Tensor;
  if (!(tt instanceof Tensor)) fail(ShapeError, name, 'a Tensor', t);
  if (!isFloatDType(tt.dtype))
    fail(DTypeError, name, 'a float dtype (f32, f64, f16, bf16)', tt.dtype);
  if (tt.device !== 'cpu')
    fail(DeviceError, name, 'a cpu tensor (use await tensor.toCpu())', `device ${tt.device}`);
  if (shape && !sameShape(tt.shape, shape)) {
    fail(ShapeError, name, `shape ${formatShape(shape)}`, `shape ${formatShape(tt.shape)}`);
  }
  return tt.toFloat64Array();
}

/** Checks a rank and returns the shape as a plain array. */
export function checkRank(t: unknown, name: string, rank: number, dims: string): number[] {
  const tt = t as Tensor;
  if (!(tt instanceof Tensor)) fail(ShapeError, name, 'a Tensor', t);
  if (tt.ndim !== rank)
    fail(ShapeError, name, `rank ${rank} ${dims}`, `shape ${formatShape(tt.shape)}`);
  return [...tt.shape];
}

export function checkScalar(value: unknown, name: string): number {
  if (typeof value !== 'number' || !Number.isFinite(value))
    fail(ValueError, name, 'a finite number', value);
  return value;
}

export function checkOptions(options: unknown): void {
  if (options === null || typeof options !== 'object')
    fail(ValueError, 'options', 'an object', options);
}

export function f64(data: Float64Array, shape: readonly number[]): Tensor {
  return Tensor.from(data, shape, 'f64');
}

export function sigmoid(x: number): number {
  // Split by sign so exp never overflows: both branches are exact in float64 for |x| < 745.
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}
