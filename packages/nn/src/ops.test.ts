import { Rng, Tensor } from '@attnkit/tensor';
import { describe, expect, it } from 'vitest';
import type { Var } from './autograd.js';
import { gradcheck } from './gradcheck.js';
import {
  add,
  addLayerNorm,
  argmax,
  concat,
  crossEntropy,
  div,
  dropout,
  embedding,
  exp,
  gelu,
  layerNorm,
  linears,
  log,
  logSoftmax,
  matmul,
  max,
  mean,
  mul,
  Param,
  permute,
  relu,
  reshape,
  rmsNorm,
  rope,
  rope3d,
  sigmoid,
  silu,
  slice,
  softmax,
  sub,
  sum,
  tanh,
  transpose,
} from './index.js';

// Every op's backward against central finite differences in float64, on odd random shapes
// (fresh seed per case: a test that can fail).
const rng = new Rng(Date.now() % 1e9);
const randn = (...shape: number[]) => rng.randn(shape, 'f64');
const pos = (...shape: number[]) => {
  const t = rng
    .rand(shape, 'f64')
    .toFloat64Array()
    .map((x) => 0.5 + x);
  return Tensor.from(t, shape, 'f64');
};
/** Values away from a kink (relu at 0, max ties) so the finite difference is smooth. */
const apart = (...shape: number[]) => {
  const n = shape.reduce((a, b) => a * b, 1);
  const perm = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(0, i + 1);
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  return Tensor.from(
    Float64Array.from(perm, (p) => (p - (n - 1) / 2 + 0.25) * 0.1),
    shape,
    'f64',
  );
};

function check(fn: (...xs: Var[]) => Var, inputs: Tensor[]) {
  const r = gradcheck(fn, inputs);
  expect(r.worst, JSON.stringify(r.at)).toBeLessThanOrEqual(1);
}

describe('gradients vs finite differences (f64)', () => {
  it('add/sub/mul/div with broadcasting', () => {
    check((a, b) => add(a, b), [randn(3, 1, 5), randn(4, 1)]);
    check((a, b) => sub(a, b), [randn(2, 3), randn(3)]);
    check((a, b) => mul(a, b), [randn(1, 3, 5), randn(2, 1, 5)]);
    check((a, b) => div(a, b), [randn(3, 5), pos(5)]);
    check((a) => add(mul(a, 3), 2), [randn(3, 2)]);
    check((a) => sub(1, div(a, 4)), [randn(7)]);
  });
  it('matmul with transposes and batch broadcasting', () => {
    check((a, b) => matmul(a, b), [randn(3, 5), randn(5, 2)]);
    check((a, b) => matmul(a, b, { transA: true }), [randn(5, 3), randn(5, 2)]);
    check((a, b) => matmul(a, b, { transB: true }), [randn(2, 3, 5), randn(4, 5)]);
    check((a, b) => matmul(a, b, { transA: true, transB: true }), [randn(2, 5, 3), randn(1, 4, 5)]);
    check((a, b) => matmul(a, b), [randn(3, 5), randn(2, 5, 3)]);
    check((a, b) => matmul(a, b), [randn(2, 1, 3, 4), randn(3, 4, 2)]);
  });
  it('sum, mean, max over axes', () => {
    check((a) => sum(a), [randn(3, 4)]);
    check((a) => sum(a, [0, 2], true), [randn(3, 2, 5)]);
    check((a) => mean(a, -1), [randn(3, 5)]);
    check((a) => max(a, 1), [apart(3, 5, 2)]);
    check((a) => max(a), [apart(7)]);
  });
  it('unary maps', () => {
    check((a) => exp(a), [randn(3, 5)]);
    check((a) => log(a), [pos(3, 5)]);
    check((a) => relu(a), [apart(3, 5)]);
    check((a) => gelu(a), [randn(3, 5)]);
    check((a) => silu(a), [randn(3, 5)]);
    check((a) => sigmoid(a), [randn(3, 5)]);
    check((a) => tanh(a), [randn(3, 5)]);
  });
  it('softmax, logSoftmax', () => {
    check((a) => softmax(a), [randn(3, 7)]);
    check((a) => logSoftmax(a), [randn(2, 3, 5)]);
  });
  it('addLayerNorm: add then layerNorm, gradients through both outputs; a shape mismatch is a ShapeError naming y', () => {
    check(
      (x, y, w, b) => {
        const { sum: s, normed } = addLayerNorm(x, y, w, b);
        return add(mul(s, s), normed);
      },
      [randn(3, 7), randn(3, 7), randn(7), randn(7)],
    );
    check((x, y) => addLayerNorm(x, y).normed, [randn(2, 3, 5), randn(2, 3, 5)]);
    const [x, y] = [randn(2, 4), randn(2, 4)];
    const r = addLayerNorm(x, y, null, null, 1e-3);
    const want = layerNorm(add(x, y), null, null, 1e-3);
    expect([...r.normed.data.toFloat64Array()]).toEqual([...want.data.toFloat64Array()]);
    expect(() => addLayerNorm(x, randn(2, 5))).toThrow(
      expect.objectContaining({ name: 'ShapeError', argument: 'y' }),
    );
    expect(() => addLayerNorm(x, y, randn(3))).toThrow(
      expect.objectContaining({ name: 'ShapeError', argument: 'weight' }),
    );
  });

  it('linears: act(x W_j^T + b_j) per weight, gradients through x, weights and biases; bad weights, biases, activation are errors naming them', () => {
    check(
      (x, w0, w1, b0, b1) => {
        const [y0, y1] = linears(x, [w0, w1], [b0, b1], 'gelu');
        return add(sum(mul(y0!, y0!)), sum(y1!));
      },
      [randn(2, 3, 5), randn(4, 5), randn(3, 5), randn(4), randn(3)],
    );
    const [x, w] = [randn(3, 5), randn(4, 5)];
    const [y] = linears(x, [w], null, 'silu');
    const want = silu(matmul(x, w, { transB: true }));
    expect([...y!.data.toFloat64Array()]).toEqual([...want.data.toFloat64Array()]);
    const named = (f: () => unknown, name: string, argument: string) =>
      expect(f).toThrow(expect.objectContaining({ name, argument }));
    named(() => linears(x, []), 'ValueError', 'weights');
    named(() => linears(randn(5), [w]), 'ShapeError', 'x');
    named(() => linears(randn(3, 6), [w]), 'ShapeError', 'x');
    named(() => linears(x, [w, randn(4, 6)]), 'ShapeError', 'weights[1]');
    named(() => linears(x, [w], [randn(4), randn(4)]), 'ValueError', 'biases');
    named(() => linears(x, [w], [randn(5)]), 'ShapeError', 'biases[0]');
    named(() => linears(x, [w], null, 'softmax' as never), 'ValueError', 'activation');
  });

  it('layerNorm, rmsNorm (with and without affine)', () => {
    check((x, w, b) => layerNorm(x, w, b), [randn(3, 7), randn(7), randn(7)]);
    check((x) => layerNorm(x), [randn(2, 3, 5)]);
    check((x, w) => rmsNorm(x, w), [randn(3, 7), randn(7)]);
    check((x) => rmsNorm(x), [randn(5, 3)]);
  });
  it('embedding (gather / scatter-add, repeated ids)', () => {
    const ids = Tensor.from(Int32Array.from([2, 0, 2, 4, 1, 2]), [2, 3]);
    check((w) => embedding(w, ids), [randn(5, 3)]);
  });
  it('crossEntropy with ignoreIndex', () => {
    const targets = Tensor.from(Int32Array.from([1, -100, 4, 0, 2]), [5]);
    check((l) => crossEntropy(l, targets), [randn(5, 5)]);
    const t3 = Tensor.from(Int32Array.from([1, 3, 7, 0, 2, 3]), [2, 3]);
    check((l) => crossEntropy(l, t3, { ignoreIndex: 7 }), [randn(2, 3, 4)]);
  });
  it('reshape, permute, transpose, slice, concat', () => {
    check((a) => reshape(a, [5, -1]), [randn(3, 5)]);
    check((a) => permute(a, [2, 0, 1]), [randn(2, 3, 5)]);
    check((a) => transpose(a, 0, 2), [randn(2, 3, 5)]);
    check((a) => slice(a, 1, 1, 4), [randn(2, 5, 3)]);
    check((a) => slice(a, -1, -2), [randn(3, 5)]);
    check((a, b, c) => concat([a, b, c], 1), [randn(2, 1, 3), randn(2, 4, 3), randn(2, 2, 3)]);
  });
  it('rope (1D, with offset) and rope3d', () => {
    check((a) => rope(a, { offset: 3 }), [randn(2, 5, 6)]);
    check((a) => rope3d(a, { grid: [2, 3, 2] }), [randn(1, 12, 8)]);
  });
  it('a composed graph (shared inputs accumulate)', () => {
    check(
      (a, b) => mul(add(a, b), tanh(matmul(a, b, { transB: true }))),
      [randn(3, 3), randn(3, 3)],
    );
  });
});

describe('argmax', () => {
  it('the first largest per row along the last axis, NaN never, 0 for a row without a number; i32, no gradient', () => {
    const inf = Number.POSITIVE_INFINITY;
    const x = Tensor.from(
      Float32Array.of(
        1,
        3,
        3,
        2,
        -inf,
        -inf,
        -inf,
        -inf,
        Number.NaN,
        -5,
        Number.NaN,
        -7,
        0,
        inf,
        9,
        inf,
        Number.NaN,
        Number.NaN,
        Number.NaN,
        Number.NaN,
      ),
      [5, 4],
    );
    const p = new Param(x.astype('f64'));
    const i = argmax(p);
    expect(i.data.dtype).toBe('i32');
    expect(i.requiresGrad).toBe(false);
    expect([...i.data.shape]).toEqual([5]);
    expect([...i.data.toFloat64Array()]).toEqual([1, 0, 1, 1, 0]);
    // Over the last axis of a batch; a vector gives a scalar.
    const r = new Rng(3).randn([2, 3, 17]);
    const got = argmax(r).data.toFloat64Array();
    const v = r.toFloat64Array();
    for (let row = 0; row < 6; row++) {
      const xs = [...v.slice(row * 17, row * 17 + 17)];
      expect(got[row]).toBe(xs.indexOf(Math.max(...xs)));
    }
    expect([...argmax(Tensor.from(Float32Array.of(2, 5, 1), [3])).data.shape]).toEqual([]);
    expect(() => argmax(Tensor.from(new Float32Array(0), [2, 0]))).toThrow(/argmax: x expected/);
  });
});

describe('dropout', () => {
  it('is seeded, scales kept elements by 1 / (1 - p), and passes the mask to the gradient', () => {
    const x = new Param(Tensor.full([1000], 2, 'f64'));
    const y1 = dropout(x, 0.25, new Rng(3));
    const y2 = dropout(x, 0.25, new Rng(3));
    const v = y1.data.toFloat64Array();
    expect(v).toEqual(y2.data.toFloat64Array());
    expect(new Set(v)).toEqual(new Set([0, 2 / 0.75]));
    const kept = v.filter((e) => e !== 0).length;
    expect(kept).toBeGreaterThan(680);
    expect(kept).toBeLessThan(820);
    sum(y1).backward();
    expect(Array.from(x.grad!.toFloat64Array())).toEqual(Array.from(v, (e) => e / 2));
    expect(dropout(x, 0.5, new Rng(1), false)).toBe(x);
    expect(() => dropout(x, 1, new Rng(1))).toThrowError(/p expected a number in \[0, 1\)/);
  });
});
