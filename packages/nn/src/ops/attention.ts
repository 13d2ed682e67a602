import type { PagedOptions } from '@attnkit/attention';
import { describe, formatShape, ShapeError, type Tensor, ValueError } from '@attnkit/tensor';
import { apply, isGradEnabled, type OpDef, type Var, type VarLike } from '../autograd.js';
import type { AttentionKernelOptions } from '../kernels/table.js';
import { standardAttention } from './standard-attention.js';

export interface AttentionOptions {
  /**
   * The attention family whose kernels run (default 'flash': FlashAttention-2). 'sigmoid':
   * sigmoid attention on the FlashSigmoid kernels (@attnkit/sigmoid-attention), o = sigmoid(scale
   * q k^T + b) v with no row normalisation. 'standard' is not a kernel: the N x N softmax scores
   * materialised through matmul, softmax and matmul (standardAttention), the baseline
   * FlashAttention is measured against. All three on every backend, forward and backward.
   */
  family?: string;
  /**
   * Family 'sigmoid' only: b in sigmoid(scale q k^T + b). Default -log(Nk) of each sequence
   * (the paper's); a model that decodes with a KV cache wants a constant (e.g. -log of its
   * context length), so that a token's weights do not depend on how many keys precede it.
   */
  sigmoidBias?: number;
  /** Bottom-right aligned causal mask (FlashAttention >= 2.1), as KERNELS.md "Common". */
  causal?: boolean;
  /** Score scale (default 1 / sqrt(D)). */
  scale?: number;
  /** Sliding window [left, right] (-1: unbounded). */
  window?: readonly [number, number];
  /**
   * Paged K/V, forward only (no gradient): k and v are page pools [numPages, pageSize, Hkv, D]
   * and [numPages, pageSize, Hkv, Dv] read through the block table (@attnkit/attention
   * AttentionOptions.paged; causal / window bottom-right relative to each sequence's length).
   * What a paged KV cache's hook attends with: decoding reads the pages in place instead of
   * gathering them into [B, Hkv, L, D] every step.
   */
  paged?: PagedOptions;
}

const attentionOp: OpDef<AttentionKernelOptions> = {
  name: 'attention',
  forward({ k, save }, [q, kk, v], options) {
    const { o, lse } = k.attention(q!, kk!, v!, options);
    // A pointwise family (sigmoid) has no LSE, and its backward reads neither o nor lse: o is
    // not kept alive for it.
    if (lse) save(q!, kk!, v!, o, lse);
    else save(q!, kk!, v!);
    return o;
  },
  backward({ k, saved }, dy, options) {
    const [q, kk, v, o, lse] = saved as [Tensor, Tensor, Tensor, Tensor?, Tensor?];
    const { dq, dk, dv } = k.attentionBackward(q, kk, v, o, lse, dy, options);
    return [dq, dk, dv];
  },
};

// Paged K/V: the forward alone (the families' backward reads contiguous K/V), so attention()
// refuses it where a gradient would be recorded.
const pagedAttentionOp: OpDef<AttentionKernelOptions> = {
  name: 'attention (paged)',
  forward({ k }, [q, kk, v], options) {
    // Nothing saves the LSE (no backward): freed here, not left to the garbage collector
    // (on webgpu its buffer returns to the pool once the queued kernel is submitted).
    const { o, lse } = k.attention(q!, kk!, v!, options);
    lse?.dispose();
    return o;
  },
  backward() {
    throw new ValueError('attention: paged K/V has no backward', 'paged');
  },
};

/**
 * Scaled dot-product attention on a family's kernels: q [B, Hq, Nq, D], k [B, Hkv, Nk, D],
 * v [B, Hkv, Nk, Dv] (GQA when Hkv divides Hq) -> [B, Hq, Nq, Dv]. The forward keeps the LSE
 * for softmax ('flash'; sigmoid has none) and the backward is the family's own
 * (FlashAttention-2's Algorithm 2 for 'flash', FlashSigmoid's for 'sigmoid').
 */
export function attention(q: VarLike, k: VarLike, v: VarLike, options: AttentionOptions = {}): Var {
  if (options === null || typeof options !== 'object')
    throw new ValueError(
      `attention: options expected an object, got ${describe(options)}`,
      'options',
    );
  const { family = 'flash', causal, scale, window, paged, sigmoidBias } = options;
  if (sigmoidBias !== undefined) {
    if (family !== 'sigmoid')
      throw new ValueError(
        `attention: sigmoidBias expected only with family 'sigmoid', got family ${describe(family)}`,
        'sigmoidBias',
      );
    if (typeof sigmoidBias !== 'number' || !Number.isFinite(sigmoidBias))
      throw new ValueError(
        `attention: sigmoidBias expected a finite number, got ${describe(sigmoidBias)}`,
        'sigmoidBias',
      );
  }
  if (paged !== undefined) {
    if (isGradEnabled() && [q, k, v].some((x) => (x as Var).requiresGrad === true))
      throw new ValueError(
        'attention: paged expected without a gradient (forward only: run it under noGrad or on inputs that need none), got inputs that require one',
        'paged',
      );
    if (family === 'standard')
      throw new ValueError(
        "attention: paged expected a kernel family, got family 'standard' (its matmuls read contiguous K/V)",
        'paged',
      );
    // The shapes (q BHND, k / v pools, block table, lengths) are checked where the kernels
    // resolve the problem (@attnkit/attention resolveAttentionProblem), with the pools' layout.
  } else {
    const [sq, sk, sv] = [q.shape, k.shape, v.shape];
    const fail = (why: string, arg: string) => {
      throw new ShapeError(
        `attention: ${why}; got q ${formatShape(sq)}, k ${formatShape(sk)}, v ${formatShape(sv)}`,
        arg,
      );
    };
    if (sq.length !== 4 || sk.length !== 4 || sv.length !== 4)
      fail('expected 4D [B, H, N, D] q, k, v', 'q');
    if (sk[0] !== sq[0] || sv[0] !== sq[0]) fail('batch sizes differ', 'k');
    if (sk[1] !== sv[1] || sk[2] !== sv[2]) fail('k and v differ in heads or length', 'v');
    if (sq[3] !== sk[3]) fail('q and k head dims differ', 'k');
    if (sq[1]! % sk[1]! !== 0) fail(`Hq = ${sq[1]} is not a multiple of Hkv = ${sk[1]}`, 'k');
    if (family === 'standard') return standardAttention(q, k, v, options);
  }
  const opts: AttentionKernelOptions = { family };
  if (causal !== undefined) opts.causal = causal;
  if (scale !== undefined) opts.scale = scale;
  if (window !== undefined) opts.window = window;
  if (sigmoidBias !== undefined) opts.sigmoidBias = sigmoidBias;
  if (paged === undefined) return apply(attentionOp, [q, k, v], opts);
  opts.paged = paged;
  return apply(pagedAttentionOp, [q, k, v], opts);
}
