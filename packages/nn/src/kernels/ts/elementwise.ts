import { CpuStorage, formatShape, numel, ShapeError, sameShape, Tensor } from '@attnkit/tensor';
import type { BinaryOp, UnaryOp } from '../table.js';
import {
  alloc,
  assertBroadcastsTo,
  broadcastIndex,
  broadcastShapes,
  dtypeOf,
  type FloatDType,
  floatsOf,
  tensorOf,
} from './util.js';

export function full(shape: readonly number[], value: number, dtype: FloatDType): Tensor {
  const out = alloc(dtype, numel(shape));
  out.fill(value);
  return tensorOf(out, shape);
}

const BINARY: Record<BinaryOp, (x: number, y: number) => number> = {
  add: (x, y) => x + y,
  sub: (x, y) => x - y,
  mul: (x, y) => x * y,
  div: (x, y) => x / y,
};

export function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const x = floatsOf(a, op, 'a');
  const y = floatsOf(b, op, 'b');
  const f = BINARY[op];
  if (sameShape(a.shape, b.shape)) {
    const r = alloc(dtypeOf(a), x.length);
    for (let i = 0; i < r.length; i++) r[i] = f(x[i]!, y[i]!);
    return tensorOf(r, a.shape);
  }
  const shape = broadcastShapes(op, a.shape, b.shape);
  const ia = broadcastIndex(a.shape, shape);
  const ib = broadcastIndex(b.shape, shape);
  const r = alloc(dtypeOf(a), ia.length);
  for (let i = 0; i < r.length; i++) r[i] = f(x[ia[i]!]!, y[ib[i]!]!);
  return tensorOf(r, shape);
}

export function affine(t: Tensor, a: number, b: number): Tensor {
  const x = floatsOf(t, 'affine');
  const r = alloc(dtypeOf(t), x.length);
  for (let i = 0; i < r.length; i++) r[i] = a * x[i]! + b;
  return tensorOf(r, t.shape);
}

// gelu, tanh form (Hendrycks & Gimpel 2016, eq. after 2): 0.5 x (1 + tanh(c (x + 0.044715 x^3))).
const GELU_C = Math.sqrt(2 / Math.PI);
const sigmoid = (x: number) => (x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x)));

const UNARY: Record<UnaryOp, (x: number) => number> = {
  exp: Math.exp,
  log: Math.log,
  relu: (x) => Math.max(x, 0),
  gelu: (x) => 0.5 * x * (1 + Math.tanh(GELU_C * (x + 0.044715 * x * x * x))),
  silu: (x) => x * sigmoid(x),
  sigmoid,
  tanh: Math.tanh,
};

/** d unary(x) / dx, given x and y = unary(x). */
const DERIVATIVE: Record<UnaryOp, (x: number, y: number) => number> = {
  exp: (_, y) => y,
  log: (x) => 1 / x,
  relu: (x) => (x > 0 ? 1 : 0),
  gelu: (x) => {
    const t = Math.tanh(GELU_C * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * GELU_C * (1 + 3 * 0.044715 * x * x);
  },
  silu: (x) => {
    const s = sigmoid(x);
    return s * (1 + x * (1 - s));
  },
  sigmoid: (_, y) => y * (1 - y),
  tanh: (_, y) => 1 - y * y,
};

export function unary(op: UnaryOp, t: Tensor): Tensor {
  const x = floatsOf(t, op);
  const f = UNARY[op];
  const r = alloc(dtypeOf(t), x.length);
  for (let i = 0; i < r.length; i++) r[i] = f(x[i]!);
  return tensorOf(r, t.shape);
}

export function unaryBackward(op: UnaryOp, xt: Tensor, yt: Tensor, dyt: Tensor): Tensor {
  const x = floatsOf(xt, op);
  const y = floatsOf(yt, op);
  const dy = floatsOf(dyt, op, 'dy');
  const f = DERIVATIVE[op];
  const r = alloc(dtypeOf(xt), x.length);
  for (let i = 0; i < r.length; i++) r[i] = dy[i]! * f(x[i]!, y[i]!);
  return tensorOf(r, xt.shape);
}

export function sumTo(t: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(t.shape, shape)) return t;
  assertBroadcastsTo('sumTo', shape, t.shape);
  const x = floatsOf(t, 'sum');
  const idx = broadcastIndex(shape, t.shape);
  const r = alloc(dtypeOf(t), numel(shape));
  for (let i = 0; i < x.length; i++) r[idx[i]!] += x[i]!;
  return tensorOf(r, shape);
}

export function broadcastTo(t: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(t.shape, shape)) return t;
  assertBroadcastsTo('broadcastTo', t.shape, shape);
  const x = floatsOf(t, 'broadcastTo');
  const idx = broadcastIndex(t.shape, shape);
  const r = alloc(dtypeOf(t), idx.length);
  for (let i = 0; i < r.length; i++) r[i] = x[idx[i]!]!;
  return tensorOf(r, shape);
}

export function maxTo(t: Tensor, shape: readonly number[]): Tensor {
  assertBroadcastsTo('max', shape, t.shape);
  const x = floatsOf(t, 'max');
  const idx = broadcastIndex(shape, t.shape);
  const r = alloc(dtypeOf(t), numel(shape));
  r.fill(Number.NEGATIVE_INFINITY);
  for (let i = 0; i < x.length; i++)
    if (x[i]! > r[idx[i]!]! || Number.isNaN(x[i]!)) r[idx[i]!] = x[i]!;
  return tensorOf(r, shape);
}

export function maxToBackward(xt: Tensor, yt: Tensor, dyt: Tensor): Tensor {
  const x = floatsOf(xt, 'max');
  const y = floatsOf(yt, 'max');
  const dy = floatsOf(dyt, 'max', 'dy');
  const idx = broadcastIndex(yt.shape, xt.shape);
  const taken = new Uint8Array(y.length);
  const r = alloc(dtypeOf(xt), x.length);
  for (let i = 0; i < x.length; i++) {
    const o = idx[i]!;
    // The gradient goes to the first maximal element only, as a max with indices does.
    if (!taken[o] && x[i] === y[o]) {
      r[i] = dy[o]!;
      taken[o] = 1;
    }
  }
  return tensorOf(r, xt.shape);
}

export function argmax(t: Tensor): Tensor {
  const x = floatsOf(t, 'argmax');
  const shape = t.shape.slice(0, -1);
  const cols = t.shape.at(-1) ?? 1;
  if (t.ndim === 0 || cols === 0)
    throw new ShapeError(
      `argmax: x expected at least one dim with a non-zero last dim, got ${formatShape(t.shape)}`,
      'x',
    );
  const rows = numel(shape);
  const out = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let best = 0;
    let max = Number.NEGATIVE_INFINITY;
    // `>` keeps the first of equal values and never takes a NaN.
    for (let j = 0; j < cols; j++) {
      const v = x[r * cols + j]!;
      if (v > max) {
        max = v;
        best = j;
      }
    }
    out[r] = best;
  }
  return new Tensor(new CpuStorage('i32', out), shape);
}

export function sumSquares(t: Tensor): number {
  const x = floatsOf(t, 'sumSquares');
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
  return s;
}
