import { normAxis, ValueError } from '@attnkit/tensor';
import { apply, asVar, noGrad, type OpDef, type Var, type VarLike } from '../autograd.js';
import { affine } from './elementwise.js';

interface ReduceAttrs {
  keep: readonly number[];
  out: readonly number[];
}

function reduceAttrs(
  op: string,
  shape: readonly number[],
  axes: number | readonly number[] | undefined,
  keepdim: boolean,
): ReduceAttrs {
  const nd = shape.length;
  const list = axes === undefined ? [...shape.keys()] : typeof axes === 'number' ? [axes] : axes;
  if (!Array.isArray(list) && typeof axes !== 'number')
    throw new ValueError(`${op}: axes expected a number or number[], got ${String(axes)}`, 'axes');
  const set = new Set(list.map((a) => normAxis(a, nd, 'axes')));
  const keep = shape.map((d, i) => (set.has(i) ? 1 : d));
  const out = keepdim ? keep : shape.filter((_, i) => !set.has(i));
  return { keep, out };
}

const sumOp: OpDef<ReduceAttrs> = {
  name: 'sum',
  forward: ({ k }, [x], { keep, out }) => k.reshape(k.sumTo(x!, keep), out),
  backward: ({ k, inputShapes }, dy, { keep }) => [
    k.broadcastTo(k.reshape(dy, keep), inputShapes[0]!),
  ],
};

const maxOp: OpDef<ReduceAttrs> = {
  name: 'max',
  forward({ k, save }, [x], { keep, out }) {
    const y = k.maxTo(x!, keep);
    save(x!, y);
    return k.reshape(y, out);
  },
  backward: ({ k, saved }, dy, { keep }) => [
    k.maxToBackward(saved[0]!, saved[1]!, k.reshape(dy, keep)),
  ],
};

/** Sum over `axes` (all when omitted). */
export function sum(x: VarLike, axes?: number | readonly number[], keepdim = false): Var {
  const v = asVar(x);
  return apply(sumOp, [v], reduceAttrs('sum', v.shape, axes, keepdim));
}

export function mean(x: VarLike, axes?: number | readonly number[], keepdim = false): Var {
  const v = asVar(x);
  const s = sum(v, axes, keepdim);
  const n = v.data.size / Math.max(s.data.size, 1);
  return affine(s, 1 / n, 0);
}

/** Max over `axes`; the gradient goes to the first maximal element. */
export function max(x: VarLike, axes?: number | readonly number[], keepdim = false): Var {
  const v = asVar(x);
  return apply(maxOp, [v], reduceAttrs('max', v.shape, axes, keepdim));
}

const argmaxOp: OpDef<Record<string, never>> = {
  name: 'argmax',
  forward: ({ k }, [x]) => k.argmax(x!),
  backward: () => [null],
};

/**
 * The index of the largest value along the last axis (the first on ties; NaN never wins; 0 for
 * a row with nothing above -Infinity): i32, shape x.shape[:-1], on x's device, with no gradient. On webgpu
 * it stays there: greedy decoding feeds it to the next token's embedding without a read-back.
 */
export function argmax(x: VarLike): Var {
  const v = asVar(x);
  return noGrad(() => apply(argmaxOp, [v], {}));
}
