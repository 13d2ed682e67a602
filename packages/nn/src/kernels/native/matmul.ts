import { formatShape, numel, ShapeError, type Tensor } from '@attnkit/tensor';
import { broadcastIndex, broadcastShapes } from '../ts/util.js';
import { f32, out, run, tensorOf } from './engine.js';

/**
 * op(a) @ op(b) on the engine's gemm, one product per batch entry (the batch maps say which a
 * and b matrices it reads, so broadcast batches are not copied); the engine makes it one gemm
 * of batch M rows when b is shared (a Linear layer).
 */
export function matmul(at: Tensor, bt: Tensor, transA: boolean, transB: boolean): Tensor {
  if (at.ndim < 2 || bt.ndim < 2)
    throw new ShapeError(
      `matmul: expected a and b with at least 2 dims, got ${formatShape(at.shape)} and ${formatShape(bt.shape)}`,
      'matmul',
    );
  const [ra, ca] = at.shape.slice(-2) as [number, number];
  const [rb, cb] = bt.shape.slice(-2) as [number, number];
  const [m, k] = transA ? [ca, ra] : [ra, ca];
  const [k2, n] = transB ? [cb, rb] : [rb, cb];
  if (k !== k2)
    throw new ShapeError(
      `matmul: inner dims differ: a ${formatShape(at.shape)}${transA ? '^T' : ''} has K = ${k}, b ${formatShape(bt.shape)}${transB ? '^T' : ''} has K = ${k2}`,
      'matmul',
    );
  const batchA = at.shape.slice(0, -2);
  const batchB = bt.shape.slice(0, -2);
  const batch = broadcastShapes('matmul', batchA, batchB);
  const c = out(numel(batch) * m * n);
  run(
    'nn.matmul',
    {
      batch: numel(batch),
      m,
      n,
      k,
      transA: transA ? 1 : 0,
      transB: transB ? 1 : 0,
      matsA: numel(batchA),
      matsB: numel(batchB),
    },
    {
      a: f32(at, 'matmul', 'a'),
      b: f32(bt, 'matmul', 'b'),
      ia: broadcastIndex(batchA, batch),
      ib: broadcastIndex(batchB, batch),
    },
    { c },
  );
  return tensorOf(c, [...batch, m, n]);
}
