import { formatShape, ShapeError, type Tensor } from '@attnkit/tensor';
import { apply, type OpDef, type Var, type VarLike } from '../autograd.js';

interface MatmulAttrs {
  transA: boolean;
  transB: boolean;
}

const matmulOp: OpDef<MatmulAttrs> = {
  name: 'matmul',
  forward({ k, save }, [a, b], { transA, transB }) {
    save(a!, b!);
    // A 2D b against batched a (a Linear layer): one [rows, K] x [K, N] product, so the
    // backward's db is one product too, not a batch of them summed.
    if (b!.ndim === 2 && a!.ndim > 2 && !transA) {
      const rows = k.reshape(a!, [-1, a!.shape[a!.ndim - 1]!]);
      const y = k.matmul(rows, b!, false, transB);
      return k.reshape(y, [...a!.shape.slice(0, -1), y.shape[1]!]);
    }
    return k.matmul(a!, b!, transA, transB);
  },
  backward({ k, saved, needsGrad, inputShapes }, dy, { transA, transB }) {
    let [a, b] = saved as [Tensor, Tensor];
    if (b.ndim === 2 && a.ndim > 2 && !transA) {
      a = k.reshape(a, [-1, a.shape[a.ndim - 1]!]);
      dy = k.reshape(dy, [-1, dy.shape[dy.ndim - 1]!]);
    }
    // C = op(A) op(B): d op(A) = dC op(B)^T, d op(B) = op(A)^T dC; transposed back where op is.
    let da: Tensor | null = null;
    let db: Tensor | null = null;
    if (needsGrad[0]) da = transA ? k.matmul(b, dy, transB, true) : k.matmul(dy, b, false, !transB);
    if (needsGrad[1]) db = transB ? k.matmul(dy, a, true, transA) : k.matmul(a, dy, !transA, false);
    const fit = (g: Tensor | null, shape: readonly number[]) => {
      if (!g) return null;
      if (g.ndim === 2 && shape.length > 2) return k.reshape(g, shape);
      return k.sumTo(g, shape);
    };
    return [fit(da, inputShapes[0]!), fit(db, inputShapes[1]!)];
  },
};

/**
 * op(a) @ op(b) over the last two dims (op = transpose with transA / transB), batch dims
 * broadcast: [..., M, K] x [..., K, N] -> [..., M, N].
 */
export function matmul(
  a: VarLike,
  b: VarLike,
  options: { transA?: boolean; transB?: boolean } = {},
): Var {
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  const sa = a.shape;
  const sb = b.shape;
  if (sa.length < 2 || sb.length < 2)
    throw new ShapeError(
      `matmul: expected a and b with at least 2 dims, got ${formatShape(sa)} and ${formatShape(sb)}`,
      'matmul',
    );
  const ka = transA ? sa[sa.length - 2] : sa[sa.length - 1];
  const kb = transB ? sb[sb.length - 1] : sb[sb.length - 2];
  if (ka !== kb)
    throw new ShapeError(
      `matmul: inner dims differ: a ${formatShape(sa)}${transA ? '^T' : ''} has K = ${ka}, b ${formatShape(sb)}${transB ? '^T' : ''} has K = ${kb}`,
      'matmul',
    );
  return apply(matmulOp, [a, b], { transA, transB });
}
