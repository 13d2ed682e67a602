import { DTypeError, formatShape, ShapeError, sameShape, type Tensor } from '@attnkit/tensor';
import type { BinaryOp, UnaryOp } from '../table.js';
import { assertBroadcastsTo, broadcastShapes } from '../ts/util.js';
import { gpuContext } from './context.js';
import { broadcastStrides, coalesce, MAX_DIMS, offsetsWgsl, Params, runMap } from './program.js';
import { type GpuFloat, output, storageOf } from './queue.js';

export function floatDtype(op: string, dtype: string): GpuFloat {
  if (dtype !== 'f32' && dtype !== 'f16')
    throw new DTypeError(`${op}: backend 'webgpu' makes f32 or f16 tensors, got ${dtype}`, 'dtype');
  return dtype;
}

export function full(shape: readonly number[], value: number, dtype: string): Tensor {
  const ctx = gpuContext('full');
  const out = output(ctx, shape, floatDtype('full', dtype));
  runMap(ctx, 'full', [], [out], 'return vec4<f32>(pf(4u));', new Params().fl(4, value));
  return out;
}

/** x in `dtype` (the same tensor when it already is). */
export function cast(x: Tensor, dtype: GpuFloat): Tensor {
  if (x.dtype === dtype) return x;
  const ctx = gpuContext('cast');
  storageOf(x, 'cast', 'x', ctx);
  const out = output(ctx, x.shape, dtype);
  runMap(ctx, 'cast', [{ name: 'x', t: x }], [out], 'return vec4<f32>(ld_x(e));', new Params());
  return out;
}

/** Decomposes the output index into each operand's offset (broadcast dims have stride 0). */
function indexing(op: string, shape: readonly number[], operands: readonly (readonly number[])[]) {
  const { shape: cs, strides } = coalesce(
    shape,
    operands.map((s) => broadcastStrides(s, shape)),
  );
  if (cs.length > MAX_DIMS)
    throw new ShapeError(
      `${op}: backend 'webgpu' indexes at most ${MAX_DIMS} dims after merging, got ${formatShape(shape)}`,
      op,
    );
  const p = new Params().arr(8, cs);
  strides.forEach((s, k) => {
    p.arr(16 + 8 * k, s);
  });
  const helpers = offsetsWgsl(
    'offs',
    cs.length,
    8,
    strides.map((_, k) => 16 + 8 * k),
  );
  return { p, helpers };
}

const BIN: Record<BinaryOp, string> = { add: '+', sub: '-', mul: '*', div: '/' };

export function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const ctx = gpuContext(op);
  storageOf(a, op, 'a', ctx);
  storageOf(b, op, 'b', ctx);
  const shape = sameShape(a.shape, b.shape) ? [...a.shape] : broadcastShapes(op, a.shape, b.shape);
  const out = output(ctx, shape, a.dtype);
  const { p, helpers } = indexing(op, shape, [a.shape, b.shape]);
  runMap(
    ctx,
    op,
    [
      { name: 'a', t: a },
      { name: 'b', t: b },
    ],
    [out],
    `let f = offs(e);\n  return vec4<f32>(ld_a(f.x) ${BIN[op]} ld_b(f.y));`,
    p,
    helpers,
  );
  return out;
}

export function affine(x: Tensor, a: number, b: number): Tensor {
  const ctx = gpuContext('affine');
  storageOf(x, 'affine', 'x', ctx);
  const out = output(ctx, x.shape, x.dtype);
  runMap(
    ctx,
    'affine',
    [{ name: 'x', t: x }],
    [out],
    'return vec4<f32>(pf(4u) * ld_x(e) + pf(5u));',
    new Params().fl(4, a).fl(5, b),
  );
  return out;
}

// gelu, tanh form (Hendrycks & Gimpel 2016): 0.5 x (1 + tanh(c (x + 0.044715 x^3))).
export const MATH = `const GELU_C = 0.7978845608028654;
fn sigm(x: f32) -> f32 { if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); } let z = exp(x); return z / (1.0 + z); }
fn tanh_s(x: f32) -> f32 { return tanh(clamp(x, -15.0, 15.0)); }`;

/** The WGSL of `op` applied to an f32 `x` (with MATH's helpers): every kernel's, fused ones too. */
export const unaryWgsl = (op: UnaryOp): string => UNARY[op];

const UNARY: Record<UnaryOp, string> = {
  exp: 'exp(x)',
  log: 'log(x)',
  relu: 'max(x, 0.0)',
  gelu: '0.5 * x * (1.0 + tanh_s(GELU_C * (x + 0.044715 * x * x * x)))',
  silu: 'x * sigm(x)',
  sigmoid: 'sigm(x)',
  tanh: 'tanh_s(x)',
};

const DERIVATIVE: Record<UnaryOp, string> = {
  exp: 'y',
  log: '1.0 / x',
  relu: 'select(0.0, 1.0, x > 0.0)',
  gelu: `0.5 * (1.0 + tanh_s(GELU_C * (x + 0.044715 * x * x * x))) + 0.5 * x * (1.0 - tanh_s(GELU_C * (x + 0.044715 * x * x * x)) * tanh_s(GELU_C * (x + 0.044715 * x * x * x))) * GELU_C * (1.0 + 3.0 * 0.044715 * x * x)`,
  silu: 'sigm(x) * (1.0 + x * (1.0 - sigm(x)))',
  sigmoid: 'y * (1.0 - y)',
  tanh: '1.0 - y * y',
};

export function unary(op: UnaryOp, x: Tensor): Tensor {
  const ctx = gpuContext(op);
  storageOf(x, op, 'x', ctx);
  const out = output(ctx, x.shape, x.dtype);
  runMap(
    ctx,
    op,
    [{ name: 'x', t: x }],
    [out],
    `let x = ld_x(e);\n  return vec4<f32>(${UNARY[op]});`,
    new Params(),
    MATH,
  );
  return out;
}

export function unaryBackward(op: UnaryOp, x: Tensor, y: Tensor, dy: Tensor): Tensor {
  const ctx = gpuContext(op);
  for (const [t, name] of [
    [x, 'x'],
    [y, 'y'],
    [dy, 'dy'],
  ] as const)
    storageOf(t, op, name, ctx);
  const out = output(ctx, x.shape, x.dtype);
  runMap(
    ctx,
    `${op} backward`,
    [
      { name: 'x', t: x },
      { name: 'y', t: y },
      { name: 'dy', t: dy },
    ],
    [out],
    `let x = ld_x(e);\n  let y = ld_y(e);\n  return vec4<f32>(ld_dy(e) * (${DERIVATIVE[op]}));`,
    new Params(),
    MATH,
  );
  return out;
}

export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  assertBroadcastsTo('broadcastTo', x.shape, shape);
  const ctx = gpuContext('broadcastTo');
  storageOf(x, 'broadcastTo', 'x', ctx);
  const out = output(ctx, shape, x.dtype);
  const { p, helpers } = indexing('broadcastTo', shape, [x.shape]);
  runMap(
    ctx,
    'broadcastTo',
    [{ name: 'x', t: x }],
    [out],
    'return vec4<f32>(ld_x(offs(e).x));',
    p,
    helpers,
  );
  return out;
}
