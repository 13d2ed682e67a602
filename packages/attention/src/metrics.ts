import { DTypeError, describe, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { fail, readF64 } from './reference/util.js';

/**
 * Accuracy of a kernel's output against a float64 reference (KERNELS.md "Tolerances").
 * Norms run over the positions where both values are finite; positions where both hold the
 * same infinity (LSE = -Infinity of a fully masked row) are exact and left out; every other
 * non-finite position is counted in `nonFinite`, which alone fails a tolerance check.
 */
export interface Accuracy {
  /** ||actual - ref||_2 / ||ref||_2 (0 when both are zero, Infinity when only ref is). */
  relL2: number;
  /** max |actual - ref|. */
  maxAbs: number;
  /** actual . ref / (||actual|| ||ref||); 1 when both are zero, 0 when exactly one is. */
  cosine: number;
  /** ||actual - ref||_1 / ||ref||_1, with relL2's conventions for zero. */
  relL1: number;
  /** NaN/Inf in actual where the reference is finite, or infinities that do not match. */
  nonFinite: number;
}

function values(x: unknown, name: string): ArrayLike<number> {
  if (x instanceof Tensor) return readF64(x, name);
  if (Array.isArray(x) || (ArrayBuffer.isView(x) && !(x instanceof DataView))) {
    return x as ArrayLike<number>;
  }
  return fail(ValueError, name, 'a Tensor or an array of numbers', x);
}

function ratio(num: number, den: number): number {
  if (den === 0) return num === 0 ? 0 : Number.POSITIVE_INFINITY;
  return num / den;
}

export function accuracy(
  actual: Tensor | ArrayLike<number>,
  reference: Tensor | ArrayLike<number>,
): Accuracy {
  const a = values(actual, 'actual');
  const r = values(reference, 'reference');
  if (a.length !== r.length) {
    fail(ShapeError, 'actual', `${r.length} elements (as reference)`, `${a.length}`);
  }
  let diff2 = 0;
  let ref2 = 0;
  let act2 = 0;
  let cross = 0;
  let diff1 = 0;
  let ref1 = 0;
  let maxAbs = 0;
  let nonFinite = 0;
  for (let i = 0; i < r.length; i++) {
    const x = Number(a[i]);
    const y = Number(r[i]);
    if (!Number.isFinite(x) || !Number.isFinite(y)) {
      if (!(x === y && !Number.isNaN(x))) nonFinite++;
      continue;
    }
    const d = x - y;
    diff2 += d * d;
    ref2 += y * y;
    act2 += x * x;
    cross += x * y;
    diff1 += Math.abs(d);
    ref1 += Math.abs(y);
    if (Math.abs(d) > maxAbs) maxAbs = Math.abs(d);
  }
  let cosine: number;
  if (act2 === 0 && ref2 === 0) cosine = 1;
  else if (act2 === 0 || ref2 === 0) cosine = 0;
  // Rounding can push |cos| a hair past 1 for parallel vectors.
  else cosine = Math.max(-1, Math.min(1, cross / Math.sqrt(act2 * ref2)));
  return {
    relL2: Math.sqrt(ratio(diff2, ref2)),
    maxAbs,
    cosine,
    relL1: ratio(diff1, ref1),
    nonFinite,
  };
}

/** KERNELS.md tolerances (relative L2 vs the float64 reference) by input storage dtype. */
export function toleranceFor(
  opts: { dtype?: 'f32' | 'f16' | 'bf16'; maxSeqLen?: number; chunked?: boolean } = {},
): number {
  if (opts === null || typeof opts !== 'object') fail(ValueError, 'opts', 'an object', opts);
  const { dtype = 'f32', maxSeqLen = 0, chunked = false } = opts;
  if (typeof maxSeqLen !== 'number' || !Number.isInteger(maxSeqLen) || maxSeqLen < 0) {
    fail(ValueError, 'maxSeqLen', 'a non-negative integer', maxSeqLen);
  }
  if (typeof chunked !== 'boolean') fail(ValueError, 'chunked', 'a boolean', chunked);
  switch (dtype) {
    case 'f32':
      // Longer reductions (N >= 4096) and chunked GLA's extra state passing add rounding.
      return maxSeqLen >= 4096 || chunked ? 2e-5 : 1e-5;
    case 'f16':
      return 2e-3;
    case 'bf16':
      return 1e-2;
    default:
      throw new DTypeError(
        `dtype: expected "f32", "f16" or "bf16", got ${describe(dtype)}`,
        'dtype',
      );
  }
}

/** relL2 <= tol and no unexpected NaN/Infinity. */
export function withinTolerance(a: Accuracy, tol: number): boolean {
  if (
    a === null ||
    typeof a !== 'object' ||
    typeof a.relL2 !== 'number' ||
    typeof a.nonFinite !== 'number'
  ) {
    fail(ValueError, 'a', 'an Accuracy (from accuracy())', a);
  }
  if (typeof tol !== 'number' || Number.isNaN(tol) || tol < 0)
    fail(ValueError, 'tol', 'a number >= 0', tol);
  return a.relL2 <= tol && a.nonFinite === 0;
}
