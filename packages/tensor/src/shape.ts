import { describe, ShapeError, ValueError } from './errors.js';

export type Shape = readonly number[];

/** A shape: an array of non-negative integers (not NaN, not fractional, not infinite). */
export function assertShape(shape: unknown, argument = 'shape'): number[] {
  const bad = Array.isArray(shape)
    ? shape.findIndex((d) => !Number.isSafeInteger(d) || (d as number) < 0)
    : 0;
  if (bad >= 0) {
    const entry = Array.isArray(shape) ? ` (entry ${bad} is ${describe(shape[bad])})` : '';
    throw new ShapeError(
      `${argument}: expected an array of non-negative integers, got ${describe(shape)}${entry}`,
      argument,
    );
  }
  return [...(shape as number[])];
}

export function numel(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

/** Normalises a possibly negative axis against `ndim`. */
export function normAxis(axis: number, ndim: number, argument = 'dim'): number {
  if (!Number.isInteger(axis) || axis < -ndim || axis >= ndim) {
    throw new ValueError(
      `${argument}: expected an integer in [${-ndim}, ${ndim - 1}], got ${describe(axis)}`,
      argument,
    );
  }
  return axis < 0 ? axis + ndim : axis;
}
