import type { Tensor } from '@attnkit/tensor';
import { expect } from 'vitest';
import { checkLargeLogitGrads, type LargeLogitCase } from './large-logits-check.js';

export * from './large-logits-check.js';

/** checkLargeLogitGrads as vitest expectations (non-finite values, then the error bound). */
export function expectLargeLogitGrads(
  c: LargeLogitCase,
  got: Record<'dq' | 'dk' | 'dv', Tensor>,
  ref: Record<'dq' | 'dk' | 'dv', Tensor>,
  label: string,
): void {
  for (const x of checkLargeLogitGrads(c, got, ref)) {
    expect(x.nonFinite, `${label} ${x.name}: non-finite values from finite inputs`).toBe(0);
    expect(
      x.err,
      `${label} ${x.name}: ||g - ref|| = ${x.err.toExponential(2)} > ${x.allowed.toExponential(2)} (tol ${x.tol.toExponential(1)} x ||ref|| ${x.refNorm.toExponential(2)} + 2^-20 x ${x.floor.toExponential(2)})`,
    ).toBeLessThanOrEqual(x.allowed);
  }
}
