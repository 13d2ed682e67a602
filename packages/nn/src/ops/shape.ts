import { describe, formatShape, normAxis, numel, ShapeError, ValueError } from '@attnkit/tensor';
import { apply, type OpDef, type Var, type VarLike } from '../autograd.js';

const reshapeOp: OpDef<{ shape: readonly number[] }> = {
  name: 'reshape',
  forward: ({ k }, [x], { shape }) => k.reshape(x!, shape),
  backward: ({ k, inputShapes }, dy) => [k.reshape(dy, inputShapes[0]!)],
};

/** Same elements, new shape (one entry may be -1). */
export function reshape(x: VarLike, shape: readonly number[]): Var {
  if (!Array.isArray(shape))
    throw new ShapeError(`reshape: shape expected a number[], got ${describe(shape)}`, 'shape');
  const dims = [...shape];
  const infer = dims.indexOf(-1);
  const size = numel(x.shape);
  if (infer >= 0) {
    const rest = numel(dims.filter((_, i) => i !== infer));
    if (rest === 0 || size % rest !== 0)
      throw new ShapeError(
        `reshape: cannot infer -1 in ${formatShape(dims)} for ${size} elements`,
        'shape',
      );
    dims[infer] = size / rest;
  }
  if (numel(dims) !== size || dims.some((d) => !Number.isInteger(d) || d < 0))
    throw new ShapeError(
      `reshape: shape ${formatShape(shape)} does not hold the ${size} elements of ${formatShape(x.shape)}`,
      'shape',
    );
  return apply(reshapeOp, [x], { shape: dims });
}

const permuteOp: OpDef<{ dims: readonly number[] }> = {
  name: 'permute',
  forward: ({ k }, [x], { dims }) => k.permute(x!, dims),
  backward({ k }, dy, { dims }) {
    const inverse = new Array<number>(dims.length);
    dims.forEach((d, i) => {
      inverse[d] = i;
    });
    return [k.permute(dy, inverse)];
  },
};

/** Reorders the dims: out.shape[i] = x.shape[dims[i]]. */
export function permute(x: VarLike, dims: readonly number[]): Var {
  const nd = x.shape.length;
  const norm = Array.isArray(dims) ? dims.map((d) => normAxis(d, nd, 'dims')) : [];
  if (norm.length !== nd || new Set(norm).size !== nd)
    throw new ShapeError(
      `permute: dims expected a permutation of 0..${nd - 1}, got ${describe(dims)}`,
      'dims',
    );
  return apply(permuteOp, [x], { dims: norm });
}

export function transpose(x: VarLike, dim0: number, dim1: number): Var {
  const nd = x.shape.length;
  const dims = [...x.shape.keys()];
  const a = normAxis(dim0, nd, 'dim0');
  const b = normAxis(dim1, nd, 'dim1');
  dims[a] = b;
  dims[b] = a;
  return permute(x, dims);
}

const sliceOp: OpDef<{ dim: number; start: number; end: number }> = {
  name: 'slice',
  forward: ({ k }, [x], { dim, start, end }) => k.slice(x!, dim, start, end),
  backward: ({ k, inputShapes }, dy, { dim, start }) => [
    k.sliceBackward(dy, inputShapes[0]!, dim, start),
  ],
};

/** Elements start..end-1 along dim (negative indices count from the end). */
export function slice(x: VarLike, dim: number, start: number, end?: number): Var {
  const d = normAxis(dim, x.shape.length, 'dim');
  const n = x.shape[d]!;
  const e0 = end ?? n;
  if (!Number.isInteger(start) || !Number.isInteger(e0))
    throw new ValueError(
      `slice: start/end expected integers, got ${describe(start)}, ${describe(end)}`,
      'start',
    );
  const s = Math.min(Math.max(start < 0 ? start + n : start, 0), n);
  const e = Math.min(Math.max(e0 < 0 ? e0 + n : e0, s), n);
  return apply(sliceOp, [x], { dim: d, start: s, end: e });
}

const concatOp: OpDef<{ dim: number }> = {
  name: 'concat',
  forward: ({ k }, xs, { dim }) => k.concat(xs, dim),
  backward({ k, inputShapes }, dy, { dim }) {
    let at = 0;
    return inputShapes.map((s) => {
      const g = k.slice(dy, dim, at, at + s[dim]!);
      at += s[dim]!;
      return g;
    });
  },
};

/** Joins tensors along dim (all other dims equal). */
export function concat(xs: readonly VarLike[], dim: number): Var {
  if (!Array.isArray(xs) || xs.length === 0)
    throw new ValueError(`concat: xs expected a non-empty array, got ${describe(xs)}`, 'xs');
  const first = xs[0]!.shape;
  const d = normAxis(dim, first.length, 'dim');
  xs.forEach((x, i) => {
    if (
      x.shape.length !== first.length ||
      x.shape.some((n: number, j: number) => j !== d && n !== first[j])
    )
      throw new ShapeError(
        `concat: xs[${i}] is ${formatShape(x.shape)}, expected ${formatShape(first)} except along dim ${d}`,
        `xs[${i}]`,
      );
  });
  return apply(concatOp, xs, { dim: d });
}
