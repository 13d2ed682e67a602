import { keyRange } from '@attnkit/attention';
import { Tensor } from '@attnkit/tensor';
import { toWebGpu, WebGpuStorage } from '@attnkit/webgpu';
import { keep, type Var, type VarLike } from '../autograd.js';
import { add, affine } from './elementwise.js';
import { matmul } from './matmul.js';
import { softmax } from './nn.js';
import { reshape } from './shape.js';

/**
 * The additive causal / window mask [Nq, Nk] (0 where a key is allowed, -inf elsewhere, by
 * the one mask rule: keyRange), on `like`'s device and in its dtype; null when nothing is
 * masked. Kept per (device, shape, band): a training step reuses one upload for every layer.
 */
function bandMask(
  like: Tensor,
  nq: number,
  nk: number,
  left: number,
  right: number,
): Tensor | null {
  if (left < 0 && right < 0) return null;
  const owner: object =
    like.storage instanceof WebGpuStorage ? like.storage.ctx : (cpuMasks as object);
  let masks = maskCache.get(owner);
  if (!masks) maskCache.set(owner, (masks = new Map()));
  const key = `${like.dtype} ${nq} ${nk} ${left} ${right}`;
  let mask = masks.get(key);
  if (!mask || (mask.storage instanceof WebGpuStorage && mask.storage.isDisposed)) {
    const values = new Float64Array(nq * nk).fill(Number.NEGATIVE_INFINITY);
    for (let i = 0; i < nq; i++) {
      const [lo, hi] = keyRange({ left, right }, i, nq, nk);
      values.fill(0, i * nk + lo, i * nk + Math.max(lo, hi));
    }
    const host = Tensor.from(values, [nq, nk]).astype(like.dtype);
    mask = keep(like.storage instanceof WebGpuStorage ? toWebGpu(host, like.storage.ctx) : host);
    masks.set(key, mask);
  }
  return mask;
}

const cpuMasks = {};
const maskCache = new WeakMap<object, Map<string, Tensor>>();

/**
 * Attention with the N x N score matrix materialised — the baseline FlashAttention is
 * measured against (its paper's "standard attention", Algorithm 0): S = scale q k^T + mask,
 * P = softmax(S), O = P v, each an nn op, so it runs on every backend and its backward is the
 * ops' own (it keeps P: O(N^2) memory per head). GQA groups the query heads of each kv head
 * by batch broadcasting [B, Hkv, G, N, D] x [B, Hkv, 1, N, D]: k and v are never copied. A
 * query row that sees no key (Nq > Nk with causal) comes out NaN, where FlashAttention writes 0.
 */
export function standardAttention(
  q: VarLike,
  k: VarLike,
  v: VarLike,
  options: { causal?: boolean; scale?: number; window?: readonly [number, number] },
): Var {
  const [b, hq, nq, d] = q.shape as [number, number, number, number];
  const [, hkv, nk] = k.shape as [number, number, number, number];
  const dv = v.shape[3]!;
  let [left, right] = options.window ?? [-1, -1];
  // Causal folds into the window's right bound, as FlashAttention (and resolveAttentionProblem).
  if (options.causal) right = right < 0 ? 0 : Math.min(right, 0);
  const qg = reshape(q, [b, hkv, hq / hkv, nq, d]);
  const kg = reshape(k, [b, hkv, 1, nk, d]);
  const vg = reshape(v, [b, hkv, 1, nk, dv]);
  let s = affine(matmul(qg, kg, { transB: true }), options.scale ?? 1 / Math.sqrt(d));
  const mask = bandMask(s.data, nq, nk, left, right);
  if (mask) s = add(s, mask);
  return reshape(matmul(softmax(s), vg), [b, hq, nq, dv]);
}
