import { numel, type Tensor } from '@attnkit/tensor';
import type { UnaryOp } from '../table.js';
import { f32, out, run, tensorOf } from './engine.js';

// nn.unary's op codes (engine.h NnUnaryOp).
const UNARY: Record<UnaryOp | 'affine', number> = {
  exp: 0,
  log: 1,
  relu: 2,
  gelu: 3,
  silu: 4,
  sigmoid: 5,
  tanh: 6,
  affine: 7,
};

export function full(shape: readonly number[], value: number): Tensor {
  const y = new Float32Array(numel(shape));
  y.fill(value);
  return tensorOf(y, shape);
}

export function unary(op: UnaryOp, x: Tensor): Tensor {
  const y = out(x.size);
  run(
    'nn.unary',
    { op: UNARY[op], count: x.size, backward: 0, a: 0, b: 0 },
    { x: f32(x, op) },
    { out: y },
  );
  return tensorOf(y, x.shape);
}

export function unaryBackward(op: UnaryOp, x: Tensor, yt: Tensor, dy: Tensor): Tensor {
  const dx = out(x.size);
  run(
    'nn.unary',
    { op: UNARY[op], count: x.size, backward: 1, a: 0, b: 0 },
    { x: f32(x, op), y: f32(yt, op, 'y'), dy: f32(dy, op, 'dy') },
    { out: dx },
  );
  return tensorOf(dx, x.shape);
}

export function affine(x: Tensor, a: number, b: number): Tensor {
  const y = out(x.size);
  run(
    'nn.unary',
    { op: UNARY.affine, count: x.size, backward: 0, a, b },
    { x: f32(x, 'affine') },
    { out: y },
  );
  return tensorOf(y, x.shape);
}

/** Partial sums of squares per chunk from the engine (double within a chunk), added here. */
export function sumSquares(x: Tensor): number {
  const chunks = Math.max(1, Math.min(64, Math.ceil(x.size / 65536)));
  const partials = out(chunks);
  run('nn.sumSquares', { count: x.size, chunks }, { x: f32(x, 'sumSquares') }, { partials });
  let s = 0;
  for (const p of partials) s += p;
  return s;
}
