import { formatShape, numel, ShapeError, type Tensor } from '@attnkit/tensor';
import { alloc, broadcastIndex, broadcastShapes, dtypeOf, floatsOf, tensorOf } from './util.js';

/** op(a) @ op(b) over the last two dims, op = transpose where asked; batch dims broadcast. */
export function matmul(at: Tensor, bt: Tensor, transA: boolean, transB: boolean): Tensor {
  if (at.ndim < 2 || bt.ndim < 2)
    throw new ShapeError(
      `matmul: expected a and b with at least 2 dims, got ${formatShape(at.shape)} and ${formatShape(bt.shape)}`,
      'matmul',
    );
  const a = floatsOf(at, 'matmul', 'a');
  const b = floatsOf(bt, 'matmul', 'b');
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
  const ia = broadcastIndex(batchA, batch);
  const ib = broadcastIndex(batchB, batch);
  const nb = numel(batch);
  const out = alloc(dtypeOf(at), nb * m * n);
  // element (i, p) of op(a) sits at i*sai + p*sap; (p, j) of op(b) at p*sbp + j*sbj.
  const [sai, sap] = transA ? [1, m] : [k, 1];
  const [sbp, sbj] = transB ? [1, k] : [n, 1];
  for (let t = 0; t < nb; t++) {
    const ao = ia[t]! * m * k;
    const bo = ib[t]! * k * n;
    const oo = t * m * n;
    for (let i = 0; i < m; i++) {
      const row = oo + i * n;
      for (let p = 0; p < k; p++) {
        const av = a[ao + i * sai + p * sap]!;
        if (av === 0) continue;
        const bp = bo + p * sbp;
        for (let j = 0; j < n; j++) out[row + j] += av * b[bp + j * sbj]!;
      }
    }
  }
  return tensorOf(out, [...batch, m, n]);
}
