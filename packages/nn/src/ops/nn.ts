import {
  describe,
  formatShape,
  type Rng,
  ShapeError,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';
import { apply, applyWithoutGrad, asVar, type OpDef, type Var, type VarLike } from '../autograd.js';
import { add, mul } from './elementwise.js';

const softmaxOp: OpDef<null> = {
  name: 'softmax',
  forward({ k, save }, [x]) {
    const y = k.softmax(x!);
    save(y);
    return y;
  },
  backward: ({ k, saved }, dy) => [k.softmaxBackward(saved[0]!, dy)],
};

const logSoftmaxOp: OpDef<null> = {
  name: 'logSoftmax',
  forward({ k, save }, [x]) {
    const y = k.logSoftmax(x!);
    save(y);
    return y;
  },
  backward: ({ k, saved }, dy) => [k.logSoftmaxBackward(saved[0]!, dy)],
};

/** Softmax over the last axis (a row of -Infinity gives zeros, not NaN). */
export const softmax = (x: VarLike): Var => apply(softmaxOp, [x], null);
/** log(softmax(x)) over the last axis, computed stably. */
export const logSoftmax = (x: VarLike): Var => apply(logSoftmaxOp, [x], null);

function checkEps(op: string, eps: number) {
  if (typeof eps !== 'number' || !(eps >= 0))
    throw new ValueError(`${op}: eps expected a non-negative number, got ${describe(eps)}`, 'eps');
}

function checkChannels(op: string, name: string, x: VarLike, t: VarLike | null | undefined) {
  const c = x.shape[x.shape.length - 1];
  if (t && (t.shape.length !== 1 || t.shape[0] !== c))
    throw new ShapeError(
      `${op}: ${name} expected [${c}] (x's last dim), got ${formatShape(t.shape)}`,
      name,
    );
}

const layerNormOp: OpDef<{ eps: number; hasW: boolean; hasB: boolean }> = {
  name: 'layerNorm',
  forward({ k, save }, inputs, { eps, hasW, hasB }) {
    const x = inputs[0]!;
    const w = hasW ? inputs[1]! : null;
    const b = hasB ? inputs[hasW ? 2 : 1]! : null;
    const { y, mean, rstd } = k.layerNorm(x, w, b, eps);
    save(x, mean, rstd, ...(w ? [w] : []));
    return y;
  },
  backward({ k, saved }, dy, { hasW, hasB }) {
    const [x, mean, rstd, w] = saved;
    const { dx, dweight, dbias } = k.layerNormBackward(x!, w ?? null, mean!, rstd!, dy);
    return [dx, ...(hasW ? [dweight] : []), ...(hasB ? [dbias] : [])];
  },
};

/**
 * A transformer block's residual add and the norm after it: `sum = x + y` and
 * `normed = layerNorm(sum, weight, bias, eps)`. Where a gradient is recorded this is add then
 * layerNorm (their backward); where none is (noGrad, or no input requires one) and the backend
 * has a fused kernel (webgpu: one pass instead of two, no statistics kept), that runs instead,
 * with the same values. x and y of one shape (no broadcasting).
 *
 * @example
 * const { sum: h, normed } = addLayerNorm(x, attnOut, ln2.weight, ln2.bias);
 */
export function addLayerNorm(
  x: VarLike,
  y: VarLike,
  weight?: VarLike | null,
  bias?: VarLike | null,
  eps = 1e-5,
): { sum: Var; normed: Var } {
  checkEps('addLayerNorm', eps);
  if (x.shape.join() !== y.shape.join())
    throw new ShapeError(
      `addLayerNorm: y expected x's shape ${formatShape(x.shape)}, got ${formatShape(y.shape)}`,
      'y',
    );
  checkChannels('addLayerNorm', 'weight', x, weight);
  checkChannels('addLayerNorm', 'bias', x, bias);
  const inputs = [x, y, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  const fused = applyWithoutGrad('addLayerNorm', inputs, (k, [a, b, ...rest]) => {
    if (!('addLayerNorm' in k)) return undefined;
    const w = weight ? rest[0]! : null;
    const bb = bias ? rest[weight ? 1 : 0]! : null;
    const r = k.addLayerNorm!(a!, b!, w, bb, eps);
    return [r.sum, r.y];
  });
  if (fused) return { sum: fused[0]!, normed: fused[1]! };
  const sum = add(x, y);
  return { sum, normed: layerNorm(sum, weight, bias, eps) };
}

/** Layer normalisation over the last dim (Ba et al. 2016), optional affine weight and bias. */
export function layerNorm(
  x: VarLike,
  weight?: VarLike | null,
  bias?: VarLike | null,
  eps = 1e-5,
): Var {
  checkEps('layerNorm', eps);
  checkChannels('layerNorm', 'weight', x, weight);
  checkChannels('layerNorm', 'bias', x, bias);
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  return apply(layerNormOp, inputs, { eps, hasW: !!weight, hasB: !!bias });
}

const rmsNormOp: OpDef<{ eps: number; hasW: boolean }> = {
  name: 'rmsNorm',
  forward({ k, save }, [x, w], { eps, hasW }) {
    const { y, rstd } = k.rmsNorm(x!, hasW ? w! : null, eps);
    save(x!, rstd, ...(hasW ? [w!] : []));
    return y;
  },
  backward({ k, saved }, dy, { hasW }) {
    const [x, rstd, w] = saved;
    const { dx, dweight } = k.rmsNormBackward(x!, w ?? null, rstd!, dy);
    return hasW ? [dx, dweight] : [dx];
  },
};

/** RMS normalisation over the last dim (Zhang & Sennrich 2019): x / rms(x) * weight. */
export function rmsNorm(x: VarLike, weight?: VarLike | null, eps = 1e-6): Var {
  checkEps('rmsNorm', eps);
  checkChannels('rmsNorm', 'weight', x, weight);
  return apply(rmsNormOp, weight ? [x, weight] : [x], { eps, hasW: !!weight });
}

function checkIndices(op: string, name: string, t: Tensor): void {
  if (t.dtype !== 'i32')
    throw new ValueError(`${op}: ${name} expected an i32 tensor, got ${t.dtype}`, name);
}

const embeddingOp: OpDef<null> = {
  name: 'embedding',
  forward({ k, save }, [w, ids]) {
    save(ids!);
    return k.gather(w!, ids!);
  },
  backward: ({ k, saved, inputShapes }, dy) => [
    k.scatterAdd(saved[0]!, dy, inputShapes[0]![0]!),
    null,
  ],
};

/** Rows of `weight` [rows, dim] at `ids` (i32, any shape) -> [...ids, dim]; backward scatter-adds. */
export function embedding(weight: VarLike, ids: Tensor): Var {
  checkIndices('embedding', 'ids', ids);
  if (weight.shape.length !== 2)
    throw new ShapeError(
      `embedding: weight expected [rows, dim], got ${formatShape(weight.shape)}`,
      'weight',
    );
  return apply(embeddingOp, [weight, ids], null, [0]);
}

const crossEntropyOp: OpDef<{ ignoreIndex: number }> = {
  name: 'crossEntropy',
  forward({ k, save, meta }, [logits, targets], { ignoreIndex }) {
    const { loss, lse, count } = k.crossEntropy(logits!, targets!, ignoreIndex);
    save(logits!, targets!, lse);
    meta.count = count;
    return loss;
  },
  backward: ({ k, saved, meta }, dy, { ignoreIndex }) => [
    k.crossEntropyBackward(saved[0]!, saved[1]!, saved[2]!, dy, ignoreIndex, meta.count as number),
    null,
  ],
};

/**
 * Mean negative log-likelihood of `targets` (i32 [...]) under softmax(`logits`) ([..., C]),
 * over the rows whose target is not `ignoreIndex` (default -100, as PyTorch); 0 when all are.
 */
export function crossEntropy(
  logits: VarLike,
  targets: Tensor,
  options: { ignoreIndex?: number } = {},
): Var {
  checkIndices('crossEntropy', 'targets', targets);
  const ignoreIndex = options.ignoreIndex ?? -100;
  const ls = logits.shape;
  if (ls.length < 1 || targets.shape.join() !== ls.slice(0, -1).join())
    throw new ShapeError(
      `crossEntropy: targets expected ${formatShape(ls.slice(0, -1))} (logits ${formatShape(ls)} without its last dim), got ${formatShape(targets.shape)}`,
      'targets',
    );
  return apply(crossEntropyOp, [logits, targets], { ignoreIndex }, [0]);
}

/**
 * Zeroes each element with probability p and scales the rest by 1 / (1 - p), the mask drawn
 * from `rng` (seeded: the same seed gives the same mask). Identity when !training or p = 0.
 */
export function dropout(x: VarLike, p: number, rng: Rng, training = true): Var {
  if (typeof p !== 'number' || !(p >= 0 && p < 1))
    throw new ValueError(`dropout: p expected a number in [0, 1), got ${describe(p)}`, 'p');
  const v = asVar(x);
  if (!training || p === 0) return v;
  // The mask comes from the backend's kernel (a constant: no gradient flows into it).
  const mask = apply(maskOp, [v.detach()], { p, rng }).data;
  return mul(v, mask);
}

const maskOp: OpDef<{ p: number; rng: Rng }> = {
  name: 'dropout',
  forward: ({ k }, [x], { p, rng }) => k.dropoutMask(x!.shape, p, rng, x!.dtype as 'f32' | 'f64'),
  backward: () => [null],
};
