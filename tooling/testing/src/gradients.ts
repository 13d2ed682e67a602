import { type Rng, Tensor } from '@attnkit/tensor';

/**
 * Gradient-test support (moved from @attnkit/attention's src/test-helpers.ts): seeded normal
 * data and central finite differences in float64, so every gradient test is reproducible and
 * independent of the analytic backward it checks.
 */

/** Normal f64 test data from @attnkit/tensor's seeded generator. */
export function randn(rng: Rng, shape: readonly number[], std = 1): Tensor {
  return rng.randn(shape, 'f64', std);
}

/** ||a - b|| / ||b||, with 0 when both are zero. */
export function relL2(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/**
 * d loss / d inputs[which] by central differences, where loss(inputs) is a scalar computed in
 * float64. With eps = 1e-5 the truncation error (~eps^2) and the cancellation error
 * (~1e-16 / eps) both sit far below the 1e-6 the tests require.
 */
export function numericGrad(
  loss: (inputs: Tensor[]) => number,
  inputs: Tensor[],
  which: number,
  eps = 1e-5,
): Float64Array {
  const base = inputs[which]!;
  const data = base.toFloat64Array();
  const grad = new Float64Array(data.length);
  const at = (i: number, value: number): number => {
    const copy = data.slice();
    copy[i] = value;
    const args = inputs.slice();
    args[which] = Tensor.from(copy, base.shape, 'f64');
    return loss(args);
  };
  for (let i = 0; i < data.length; i++) {
    grad[i] = (at(i, data[i]! + eps) - at(i, data[i]! - eps)) / (2 * eps);
  }
  return grad;
}

/** sum(out * weights): the scalar whose gradient a backward given dO = weights returns. */
export function dot(out: Tensor, weights: Tensor): number {
  const a = out.toFloat64Array();
  const w = weights.toFloat64Array();
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * w[i]!;
  return s;
}
