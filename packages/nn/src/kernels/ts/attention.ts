import { checkFiniteValues, tiledBackwardTs, tiledForwardTs } from '@attnkit/skeleton';
import type { Tensor } from '@attnkit/tensor';
import { attentionFamily } from '../families.js';
import type { AttentionKernelOptions } from '../table.js';

/**
 * The ts attention kernels: the family's problem and hooks (its own `resolve`) on the
 * skeleton's TS loop, synchronously: FlashAttention-2's forward with the LSE and its backward,
 * FlashSigmoid's pointwise forward and backward. A family nn does not know is an
 * UnsupportedError, never another family's kernel.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions) {
  const { fam, opts } = attentionFamily('attention', 'ts', q, options, true);
  const { p, hooks } = fam.family.resolve(q, k, v, opts);
  return tiledForwardTs(p, hooks, q, k, v, opts);
}

export function attentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor | undefined,
  lse: Tensor | undefined,
  dO: Tensor,
  options: AttentionKernelOptions,
) {
  const { fam, opts } = attentionFamily('attention', 'ts', q, options, true);
  const { p, hooks } = fam.family.resolve(q, k, v, opts);
  // A diverged forward's NaN / +inf LSE is a ValueError naming lse, not NaN gradients.
  if (fam.lse) checkFiniteValues('backward', { q, k, v, o: o!, lse: lse!, do: dO }, {});
  const { dq, dk, dv } = tiledBackwardTs(p, hooks, q, k, v, o, lse, dO, opts);
  return { dq, dk, dv };
}
