import { AllocationError, DTypeError, describe, ValueError } from './errors.js';

/** Element types. f16 and bf16 are stored as raw 16-bit patterns in a Uint16Array. */
export type DType = 'f64' | 'f32' | 'f16' | 'bf16' | 'i32' | 'i8' | 'u8';

export const DTYPES: readonly DType[] = ['f64', 'f32', 'f16', 'bf16', 'i32', 'i8', 'u8'];

export type TypedArray =
  | Float64Array
  | Float32Array
  | Uint16Array
  | Int32Array
  | Int8Array
  | Uint8Array;

/** The TypedArray that stores each dtype on the CPU. */
export interface StorageArrayOf {
  f64: Float64Array;
  f32: Float32Array;
  f16: Uint16Array;
  bf16: Uint16Array;
  i32: Int32Array;
  i8: Int8Array;
  u8: Uint8Array;
}

const CTORS = {
  f64: Float64Array,
  f32: Float32Array,
  f16: Uint16Array,
  bf16: Uint16Array,
  i32: Int32Array,
  i8: Int8Array,
  u8: Uint8Array,
} as const;

export function bytesPerElement(dtype: DType): number {
  return CTORS[dtype].BYTES_PER_ELEMENT;
}

export function isFloatDType(dtype: DType): boolean {
  return dtype === 'f64' || dtype === 'f32' || dtype === 'f16' || dtype === 'bf16';
}

/** The integer dtypes. */
export type IntDType = 'i32' | 'i8' | 'u8';

/** The values each integer dtype holds (what its message says, and the bounds). */
const INT_RANGES: Record<IntDType, { min: number; max: number; text: string }> = {
  i32: { min: -(2 ** 31), max: 2 ** 31 - 1, text: '-2^31..2^31-1 (-2147483648..2147483647)' },
  i8: { min: -128, max: 127, text: '-128..127' },
  u8: { min: 0, max: 255, text: '0..255' },
};

export function isIntDType(dtype: DType): dtype is IntDType {
  return dtype === 'i32' || dtype === 'i8' || dtype === 'u8';
}

/** Whether `dtype` holds `value` exactly: an integer (not NaN, not fractional) in its range. */
export function intFits(dtype: IntDType, value: unknown): value is number {
  const r = INT_RANGES[dtype];
  return Number.isInteger(value) && (value as number) >= r.min && (value as number) <= r.max;
}

/**
 * The one check for numbers going into an integer dtype: TypedArrays would wrap 300 to 44 in a
 * u8, truncate 1.5 and turn NaN into 0, so a value the dtype cannot hold exactly is a ValueError
 * naming `argument`, the dtype's range and the value (and its index, when given).
 */
export function assertIntFits(
  dtype: IntDType,
  value: unknown,
  argument: string,
  index?: number,
): number {
  if (intFits(dtype, value)) return value;
  const at = index === undefined ? '' : ` at index ${index}`;
  throw new ValueError(
    `${argument}: ${dtype} holds integers in ${INT_RANGES[dtype].text}, got ${describe(value)}${at}`,
    argument,
  );
}

export function assertDType(value: unknown, argument = 'dtype'): DType {
  if (typeof value === 'string' && (DTYPES as readonly string[]).includes(value)) {
    return value as DType;
  }
  throw new DTypeError(
    `${argument}: expected one of ${DTYPES.join(', ')}, got ${describe(value)}`,
    argument,
  );
}

/**
 * A new zeroed storage array of `length` elements: the one place CPU tensors allocate. A length
 * the runtime cannot hold (not a safe integer, past the engine's typed-array limit, or memory
 * the engine cannot get) is an AllocationError naming `shape` (default [length]), the dtype and
 * the bytes, not the engine's bare RangeError ("Invalid typed array length: ...").
 */
export function allocStorage<D extends DType>(
  dtype: D,
  length: number,
  shape: readonly number[] = [length],
): StorageArrayOf[D] {
  const Ctor = CTORS[dtype];
  const bytes = length * Ctor.BYTES_PER_ELEMENT;
  if (typeof length !== 'number' || !(length >= 0) || !Number.isInteger(length)) {
    throw new ValueError(
      `length: expected a non-negative integer element count, got ${describe(length)}`,
      'length',
    );
  }
  // A product of extents past 2^53 is no longer an exact count: no engine holds it anyway.
  if (!Number.isSafeInteger(length)) {
    throw new AllocationError(
      shape,
      dtype,
      bytes,
      `${length.toExponential(3)} elements is not a safe integer`,
    );
  }
  try {
    return new Ctor(length) as StorageArrayOf[D];
  } catch (error) {
    if (error instanceof RangeError) {
      throw new AllocationError(shape, dtype, bytes, error.message);
    }
    throw error;
  }
}

/** A view of `buffer` as the storage array of `dtype` (byteOffset must be aligned). */
export function viewStorage<D extends DType>(
  dtype: D,
  buffer: ArrayBufferLike,
  byteOffset: number,
  length: number,
): StorageArrayOf[D] {
  return new CTORS[dtype](buffer as ArrayBuffer, byteOffset, length) as StorageArrayOf[D];
}

/** The dtype whose CPU storage is this TypedArray (Uint16Array is taken as f16). */
export function dtypeOfArray(array: TypedArray): DType {
  if (array instanceof Float64Array) return 'f64';
  if (array instanceof Float32Array) return 'f32';
  if (array instanceof Uint16Array) return 'f16';
  if (array instanceof Int32Array) return 'i32';
  if (array instanceof Int8Array) return 'i8';
  if (array instanceof Uint8Array) return 'u8';
  throw new DTypeError(`data: unsupported array type ${describe(array)}`, 'data');
}
