import { accuracy } from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import { expect } from 'vitest';

/**
 * Asserts no unexpected NaN/Infinity and relative L2 within `tol` (KERNELS.md "Tolerances"),
 * naming `label` in the failure.
 */
export function expectClose(
  actual: Tensor | ArrayLike<number>,
  reference: Tensor | ArrayLike<number>,
  tol: number,
  label: string,
): void {
  const a = accuracy(actual, reference);
  expect(a.nonFinite, `${label}: non-finite values`).toBe(0);
  expect(a.relL2, `${label}: relative L2`).toBeLessThanOrEqual(tol);
}

/**
 * SageAttention2's O from a kernel vs the TS kernel (the spec) from the same codes (ARITHMETIC.md "Equality across
 * backends"): rows whose pCodes agree match to f32 rounding; a pCode may differ by 1 where
 * f32(p 255) sits within an ulp or two of a .5 boundary (the GPU's exp vs Math.exp), and one
 * such flip moves its row by ~|vCode dV| / (255 l), ~1e-3 relative here, which alone can
 * push the whole tensor's relative L2 past 1e-4. So: rows beyond 1e-5 (flips) are counted
 * and bounded (at most 1% of the rows + 2, each within 1e-2), the others must be within
 * 1e-5 together. Measured on llvmpipe with the kernel's exp (sage_exp, <= 1 ulp): one run in
 * ~40 of 616 rows x 131 keys has one flipped row; the others are within ~1e-7.
 */
export function expectSageRowsClose(
  got: Float32Array,
  want: Float32Array,
  dv: number,
  label: string,
): void {
  expect(accuracy(got, want).nonFinite, `${label}: non-finite`).toBe(0);
  const rows = want.length / dv;
  const flipped: number[] = [];
  let diff2 = 0;
  let ref2 = 0;
  for (let r = 0; r < rows; r++) {
    let d2 = 0;
    let w2 = 0;
    for (let c = r * dv; c < (r + 1) * dv; c++) {
      d2 += (got[c]! - want[c]!) ** 2;
      w2 += want[c]! ** 2;
    }
    if (d2 > 1e-10 * w2) {
      flipped.push(r);
      expect(Math.sqrt(d2 / w2), `${label}: row ${r} (a pCode flip?)`).toBeLessThanOrEqual(1e-2);
    } else {
      diff2 += d2;
      ref2 += w2;
    }
  }
  expect(
    flipped.length,
    `${label}: ${flipped.length} rows beyond 1e-5 (${flipped.slice(0, 8).join(', ')})`,
  ).toBeLessThanOrEqual(2 + rows / 100);
  expect(
    Math.sqrt(diff2 / Math.max(ref2, 1e-300)),
    `${label}: rows without flips`,
  ).toBeLessThanOrEqual(1e-5);
}

/**
 * Asserts that `fn` throws an instance of `type` whose `argument` is `argument` and whose message
 * matches `text`: a typed error naming the argument at fault (the project's error rule).
 */
export function expectTypedError(
  fn: () => unknown,
  type: new (...args: never[]) => Error,
  argument: string,
  text: RegExp,
): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught, argument).toBeInstanceOf(type);
  expect((caught as { argument?: unknown }).argument).toBe(argument);
  expect((caught as Error).message).toMatch(text);
}
