import { describe, formatShape, ShapeError, type Tensor, ValueError } from '@attnkit/tensor';
import { apply, applyWithoutGrad, type OpDef, type Var, type VarLike } from '../autograd.js';
import type { UnaryOp } from '../kernels/table.js';
import { add, applyUnary, isUnaryOp, UNARY_OPS } from './elementwise.js';

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

/** Activations `linears` applies after the bias: nn's unary ops, by name. */
export type LinearActivation = UnaryOp;

/**
 * Several Linear layers of one input: y_j = act(x W_j^T + b_j) for each weight W_j [N_j, K]
 * (PyTorch's Linear layout) of x [..., rows, K] (at least 2 dims, as matmul), giving
 * [..., rows, N_j]; `biases` one per weight (each
 * [N_j] or null), `activation` one of nn's unary ops, applied to every output. Where a gradient
 * is recorded this is matmul, add and the activation (their backward); where none is and the
 * backend has a fused kernel for the shapes (webgpu: at most 8 rows of x, f32; up to three
 * weights, i.e. a decoded token's q, k and v projections, or an MLP's first layer with its
 * gelu), one pass runs instead, with the same sums.
 *
 * @example
 * const [q, k, v] = linears(x, [wq.weight, wk.weight, wv.weight]);
 * const h = linears(x, [fc1.weight], [fc1.bias], 'gelu')[0];
 */
export function linears(
  x: VarLike,
  weights: readonly VarLike[],
  biases?: readonly (VarLike | null | undefined)[] | null,
  activation?: LinearActivation,
): Var[] {
  if (!Array.isArray(weights) || weights.length === 0)
    throw new ValueError(
      `linears: weights expected a non-empty array, got ${describe(weights)}`,
      'weights',
    );
  if (biases != null && (!Array.isArray(biases) || biases.length !== weights.length))
    throw new ValueError(
      `linears: biases expected null or an array of ${weights.length} (one per weight), got ${describe(biases)}`,
      'biases',
    );
  if (activation !== undefined && !isUnaryOp(activation))
    throw new ValueError(
      `linears: activation expected one of ${UNARY_OPS.join(', ')}, got ${describe(activation)}`,
      'activation',
    );
  // At least [rows, K], as matmul takes it (every path must accept the same shapes).
  if (x.shape.length < 2)
    throw new ShapeError(
      `linears: x expected [..., rows, K] (at least 2 dims, as matmul), got ${formatShape(x.shape)}`,
      'x',
    );
  const kx = x.shape.at(-1);
  const w0 = weights[0]!.shape;
  if (w0.length === 2 && w0[1] !== kx)
    throw new ShapeError(
      `linears: x expected last dim ${w0[1]} (weights[0] is ${formatShape(w0)}), got ${formatShape(x.shape)}`,
      'x',
    );
  weights.forEach((w, j) => {
    if (w.shape.length !== 2 || w.shape[1] !== kx)
      throw new ShapeError(
        `linears: weights[${j}] expected [N, ${kx}] (x's last dim), got ${formatShape(w.shape)}`,
        `weights[${j}]`,
      );
    const b = biases?.[j];
    if (b != null && (b.shape.length !== 1 || b.shape[0] !== w.shape[0]))
      throw new ShapeError(
        `linears: biases[${j}] expected [${w.shape[0]}], got ${formatShape(b.shape)}`,
        `biases[${j}]`,
      );
  });
  const given = biases?.filter((b): b is VarLike => b != null) ?? [];
  // The fused kernel takes every bias or none.
  const fusable = given.length === 0 || given.length === weights.length;
  if (fusable) {
    // `in`: the kernels table throws for a kernel the backend lacks (optional ones too).
    const fused = applyWithoutGrad('linears', [x, ...weights, ...given], (k, [t, ...rest]) =>
      'linears' in k
        ? k.linears!(
            t!,
            rest.slice(0, weights.length),
            given.length > 0 ? rest.slice(weights.length) : null,
            activation,
          )
        : undefined,
    );
    if (fused) return fused;
  }
  return weights.map((w, j) => {
    const b = biases?.[j];
    let y = matmul(x, w, { transB: true });
    if (b != null) y = add(y, b);
    return activation ? applyUnary(activation, y) : y;
  });
}
