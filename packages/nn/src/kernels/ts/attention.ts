import { flashAttentionBackwardTs, flashAttentionTs } from '@attnkit/flash-attention';
import type { Tensor } from '@attnkit/tensor';
import { flashOnly } from '../shared.js';
import type { AttentionKernelOptions } from '../table.js';

/**
 * The ts attention kernels: the families' own synchronous TS entry points (FlashAttention-2
 * forward with LSE, and its backward). Families without a synchronous ts entry are not here
 * yet; asking for one is an UnsupportedError, never another family's kernel.
 */
function familyOptions(op: string, q: Tensor, options: AttentionKernelOptions) {
  return flashOnly(op, 'ts', q, options, true);
}

export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions) {
  return flashAttentionTs(q, k, v, familyOptions('attention', q, options));
}

export function attentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  dO: Tensor,
  options: AttentionKernelOptions,
) {
  const { dq, dk, dv } = flashAttentionBackwardTs(
    q,
    k,
    v,
    o,
    lse,
    dO,
    familyOptions('attention', q, options),
  );
  return { dq, dk, dv };
}
