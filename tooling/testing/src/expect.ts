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
