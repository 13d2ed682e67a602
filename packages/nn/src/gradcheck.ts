import { DTypeError, describe, Rng, Tensor, ValueError } from '@attnkit/tensor';
import { isTensor, noGrad, Var } from './autograd.js';

export interface GradcheckResult {
  /** max over elements of |analytic - numeric| / (atol + rtol |numeric|); <= 1 passes. */
  worst: number;
  ok: boolean;
  /** Where the worst element is: input index, flat element, both derivatives. */
  at: { input: number; index: number; analytic: number; numeric: number };
}

/**
 * Checks fn's backward against central finite differences (h = eps) of the scalar
 * sum(fn(...inputs) * r), r a fixed random tensor, for every element of every input. Inputs
 * must be f64 (float32 differences drown in rounding). Non-input arguments (indices, options)
 * belong inside fn.
 */
export function gradcheck(
  fn: (...xs: Var[]) => Var,
  inputs: readonly Tensor[],
  options: { eps?: number; atol?: number; rtol?: number; seed?: number } = {},
): GradcheckResult {
  const { eps = 1e-6, atol = 1e-6, rtol = 1e-5, seed = 1 } = options;
  inputs.forEach((t, i) => {
    if (!isTensor(t))
      throw new ValueError(
        `gradcheck: inputs[${i}] expected a Tensor, got ${describe(t)}`,
        'inputs',
      );
    if (t.dtype !== 'f64')
      throw new DTypeError(`gradcheck: inputs[${i}] expected f64, got ${t.dtype}`, 'inputs');
  });
  const vars = inputs.map((t) => new Var(t, true));
  const out = fn(...vars);
  const r = new Rng(seed).randn(out.shape, 'f64');
  out.backward(r);
  const rv = r.toFloat64Array();
  const value = (xs: Tensor[]) =>
    noGrad(() => {
      const y = fn(...xs.map((t) => new Var(t))).data.toFloat64Array();
      let s = 0;
      for (let i = 0; i < y.length; i++) s += y[i]! * rv[i]!;
      return s;
    });
  const result: GradcheckResult = {
    worst: 0,
    ok: true,
    at: { input: -1, index: -1, analytic: 0, numeric: 0 },
  };
  inputs.forEach((t, i) => {
    const base = t.toFloat64Array();
    const analytic = vars[i]!.grad?.toFloat64Array() ?? new Float64Array(base.length);
    for (let e = 0; e < base.length; e++) {
      const probe = (delta: number) => {
        const x = Float64Array.from(base);
        x[e]! += delta;
        const xs = inputs.map((u, j) => (j === i ? Tensor.from(x, u.shape, 'f64') : u));
        return value(xs);
      };
      const numeric = (probe(eps) - probe(-eps)) / (2 * eps);
      const err = Math.abs(analytic[e]! - numeric) / (atol + rtol * Math.abs(numeric));
      if (!(err <= result.worst)) {
        result.worst = Number.isNaN(err) ? Number.POSITIVE_INFINITY : err;
        result.at = { input: i, index: e, analytic: analytic[e]!, numeric };
      }
    }
  });
  result.ok = result.worst <= 1;
  return result;
}
