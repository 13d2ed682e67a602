import { UnsupportedError } from '@attnkit/attention';
import { DTypeError, Rng, ShapeError, Tensor, ValueError } from '@attnkit/tensor';
import { afterAll, describe, expect, it } from 'vitest';
import {
  add,
  attention,
  matmul,
  mul,
  Param,
  registerNativeKernels,
  reshape,
  setDeviceBackend,
  sigmoid,
  softmax,
  sum,
  type Var,
} from './index.js';

/**
 * The attention op (FlashAttention-2's and FlashSigmoid's ts forward and backward, f32) against
 * the same attention composed from ops whose gradients are finite-difference checked, in f64.
 * `sigmoid`: w = sigmoid(s + b) where visible, 0 where masked (no normalisation), b the bias.
 */
function composed(
  q: Var,
  k: Var,
  v: Var,
  causal: boolean,
  window?: [number, number],
  sigmoidBias?: number,
): Var {
  const [b, hq, nq, d] = q.shape as number[];
  const [, hkv, nk] = k.shape as number[];
  const g = hq! / hkv!;
  // GQA: query heads grouped per kv head, k and v broadcast over the group.
  const qg = reshape(q, [b!, hkv!, g, nq!, d!]);
  const kg = reshape(k, [b!, hkv!, 1, nk!, d!]);
  const vg = reshape(v, [b!, hkv!, 1, nk!, v.shape[3]!]);
  let s = mul(matmul(qg, kg, { transB: true }), 1 / Math.sqrt(d!));
  if (causal || window) {
    // Bottom-right aligned (KERNELS.md "Common"): with c = i + nk - nq, query i sees key j iff
    // c - left <= j <= c + right (-1: unbounded); causal caps right at 0.
    const [left, right] = window ?? [-1, -1];
    const mask = new Float64Array(nq! * nk!);
    const keep = new Float64Array(nq! * nk!).fill(1);
    for (let i = 0; i < nq!; i++)
      for (let j = 0; j < nk!; j++) {
        const c = i + nk! - nq!;
        let hi = right < 0 ? Number.POSITIVE_INFINITY : c + right;
        if (causal) hi = Math.min(hi, c);
        const lo = left < 0 ? Number.NEGATIVE_INFINITY : c - left;
        if (j > hi || j < lo) {
          mask[i * nk! + j] = Number.NEGATIVE_INFINITY;
          keep[i * nk! + j] = 0;
        }
      }
    if (sigmoidBias === undefined) s = add(s, Tensor.from(mask, [nq!, nk!], 'f64'));
    else {
      const w = mul(sigmoid(add(s, sigmoidBias)), Tensor.from(keep, [nq!, nk!], 'f64'));
      return reshape(matmul(w, vg), [b!, hq!, nq!, v.shape[3]!]);
    }
  }
  const w = sigmoidBias === undefined ? softmax(s) : sigmoid(add(s, sigmoidBias));
  return reshape(matmul(w, vg), [b!, hq!, nq!, v.shape[3]!]);
}

// Every comparison runs on both cpu backends: ts, and native where its addon loads.
const CPU_BACKENDS = registerNativeKernels() === true ? ['ts', 'native'] : ['ts'];
afterAll(() => setDeviceBackend('cpu', CPU_BACKENDS.at(-1)!));

function compare(
  shapes: { b: number; hq: number; hkv: number; nq: number; nk: number; d: number },
  causal: boolean,
  window?: [number, number],
  sigmoid?: { bias?: number },
) {
  for (const backend of CPU_BACKENDS) {
    setDeviceBackend('cpu', backend);
    compareOn(backend, shapes, causal, window, sigmoid);
  }
}

function compareOn(
  backend: string,
  shapes: { b: number; hq: number; hkv: number; nq: number; nk: number; d: number },
  causal: boolean,
  window?: [number, number],
  sigmoid?: { bias?: number },
) {
  const rng = new Rng(Date.now() % 1e9);
  const { b, hq, hkv, nq, nk, d } = shapes;
  const [q, k, v, dout] = [
    [b, hq, nq, d],
    [b, hkv, nk, d],
    [b, hkv, nk, d],
    [b, hq, nq, d],
  ].map((s) => rng.randn(s, 'f64')) as [Tensor, Tensor, Tensor, Tensor];
  const run = (dtype: 'f32' | 'f64') => {
    const [pq, pk, pv] = [q, k, v].map((t) => new Param(t.astype(dtype)));
    // Sigmoid's default bias is -log(Nk) (every sequence here has Nk keys).
    const bias = sigmoid && (sigmoid.bias ?? -Math.log(nk));
    const family = sigmoid
      ? { family: 'sigmoid', ...(sigmoid.bias !== undefined ? { sigmoidBias: sigmoid.bias } : {}) }
      : {};
    const o =
      dtype === 'f32'
        ? attention(pq!, pk!, pv!, { causal, ...(window ? { window } : {}), ...family })
        : composed(pq!, pk!, pv!, causal, window, bias);
    sum(mul(o, dout.astype(dtype))).backward();
    return [o.data, pq!.grad!, pk!.grad!, pv!.grad!].map((t) => t.toFloat64Array());
  };
  const got = run('f32');
  const want = run('f64');
  got.forEach((g, i) => {
    const w = want[i]!;
    const scale = Math.max(...w.map(Math.abs));
    const err = Math.max(...g.map((x, j) => Math.abs(x - w[j]!)));
    // f32 FlashAttention against the f64 composition: KERNELS.md's f32 tolerance, 1e-4 relative.
    expect(err / scale, `${backend} ${['o', 'dq', 'dk', 'dv'][i]}`).toBeLessThan(1e-4);
  });
}

describe('attention op (family flash, ts and native)', () => {
  it('matches the f64 composition, forward and backward', () => {
    compare({ b: 2, hq: 2, hkv: 2, nq: 7, nk: 7, d: 8 }, false);
  });
  it('causal with Nq != Nk and GQA', () => {
    compare({ b: 1, hq: 4, hkv: 2, nq: 5, nk: 9, d: 6 }, true);
    compare({ b: 2, hq: 3, hkv: 1, nq: 11, nk: 11, d: 4 }, true);
  });
  it('sliding window, alone and with causal', () => {
    compare({ b: 1, hq: 2, hkv: 1, nq: 9, nk: 9, d: 4 }, false, [2, 1]);
    compare({ b: 1, hq: 2, hkv: 2, nq: 6, nk: 10, d: 4 }, true, [3, -1]);
  });
  it('bad input: shapes, f64, unknown family', () => {
    const t = (s: number[], dt: 'f32' | 'f64' = 'f32') => Tensor.zeros(s, dt);
    expect(() => attention(t([1, 2, 4, 8]), t([1, 3, 4, 8]), t([1, 3, 4, 8]))).toThrowError(
      ShapeError,
    );
    expect(() => attention(t([1, 2, 4, 8]), t([1, 2, 4, 6]), t([1, 2, 4, 8]))).toThrowError(
      /head dims differ/,
    );
    expect(() =>
      attention(t([1, 1, 4, 8], 'f64'), t([1, 1, 4, 8], 'f64'), t([1, 1, 4, 8], 'f64')),
    ).toThrowError(DTypeError);
    expect(() =>
      attention(t([1, 1, 4, 8]), t([1, 1, 4, 8]), t([1, 1, 4, 8]), { family: 'gla' }),
    ).toThrowError(UnsupportedError);
  });
});

describe('attention op (family sigmoid, ts and native)', () => {
  it('matches the f64 composition, forward and backward, default bias -log Nk', () => {
    compare({ b: 2, hq: 2, hkv: 2, nq: 7, nk: 7, d: 8 }, false, undefined, {});
    // Nq != Nk: the default is -log of the keys' count, not the queries'.
    compare({ b: 1, hq: 2, hkv: 1, nq: 5, nk: 13, d: 8 }, true, undefined, {});
  });
  it('causal with Nq != Nk, GQA, window, and a given bias', () => {
    compare({ b: 1, hq: 4, hkv: 2, nq: 5, nk: 9, d: 6 }, true, undefined, { bias: -1.3 });
    compare({ b: 2, hq: 3, hkv: 1, nq: 11, nk: 11, d: 4 }, true, undefined, {});
    compare({ b: 1, hq: 2, hkv: 1, nq: 9, nk: 9, d: 4 }, false, [2, 1], { bias: 0.4 });
  });
  it('bad input: sigmoidBias with another family, or not finite', () => {
    const t = (s: number[]) => Tensor.zeros(s, 'f32');
    const x = () => t([1, 1, 4, 8]);
    expect(() => attention(x(), x(), x(), { sigmoidBias: -1 })).toThrowError(ValueError);
    expect(() => attention(x(), x(), x(), { sigmoidBias: -1 })).toThrowError(
      /^attention: sigmoidBias expected only with family 'sigmoid', got family "flash"/,
    );
    expect(() =>
      attention(x(), x(), x(), { family: 'sigmoid', sigmoidBias: Number.NaN }),
    ).toThrowError(/sigmoidBias expected a finite number, got NaN/);
  });
});
