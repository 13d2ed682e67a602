import { Rng, Tensor } from '@attnkit/tensor';
import { expect } from 'vitest';

/** One non-finite value planted in q, k or v ([B = 1, H, N, D], head-major). */
export type Poison = { t: 'q' | 'k' | 'v'; row: number; head: number; col: number; x: number };

/** Seeded normal q, k, v (and dO) of shape [1, H, N, D] with `poison` planted in one of them. */
export function poisonedInputs(
  seed: number,
  shape: readonly [1, number, number, number],
  poison: Poison,
): { q: Tensor; k: Tensor; v: Tensor; dO: Tensor } {
  const rng = new Rng(seed);
  const [, , N, D] = shape;
  const t = {
    q: rng.randn(shape).toFloat32Array(),
    k: rng.randn(shape).toFloat32Array(),
    v: rng.randn(shape).toFloat32Array(),
  };
  t[poison.t][(poison.head * N + poison.row) * D + poison.col] = poison.x;
  return {
    q: Tensor.from(t.q, shape),
    k: Tensor.from(t.k, shape),
    v: Tensor.from(t.v, shape),
    dO: rng.randn(shape),
  };
}

/** Same NaN / +Inf / -Inf pattern per element, relL2 <= tol over the finite ones. */
export function expectSamePattern(
  got: Tensor | Float32Array,
  want: Tensor,
  tol: number,
  what: string,
): void {
  const a = got instanceof Float32Array ? got : got.toFloat32Array();
  const b = want.toFloat64Array();
  expect(a.length).toBe(b.length);
  const kind = (x: number) => (Number.isNaN(x) ? 'nan' : Number.isFinite(x) ? 'fin' : `${x}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    if (kind(a[i]!) !== kind(b[i]!)) {
      throw new Error(`${what}[${i}]: got ${a[i]}, reference ${b[i]}`);
    }
    if (Number.isFinite(b[i]!)) {
      num += (a[i]! - b[i]!) ** 2;
      den += b[i]! ** 2;
    }
  }
  expect(Math.sqrt(num / Math.max(den, 1e-30)), `${what} relL2`).toBeLessThan(tol);
}
