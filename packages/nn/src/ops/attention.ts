import { describe, formatShape, ShapeError, type Tensor, ValueError } from '@attnkit/tensor';
import { apply, type OpDef, type Var, type VarLike } from '../autograd.js';
import type { AttentionKernelOptions } from '../kernels/table.js';
import { standardAttention } from './standard-attention.js';

export interface AttentionOptions {
  /**
   * The attention family whose kernels run (default 'flash': FlashAttention-2). 'standard'
   * is not a kernel: the N x N scores materialised through matmul, softmax and matmul
   * (standardAttention), the baseline FlashAttention is measured against, on every backend.
   */
  family?: string;
  /** Bottom-right aligned causal mask (FlashAttention >= 2.1), as KERNELS.md "Common". */
  causal?: boolean;
  /** Score scale (default 1 / sqrt(D)). */
  scale?: number;
  /** Sliding window [left, right] (-1: unbounded). */
  window?: readonly [number, number];
}

const attentionOp: OpDef<AttentionKernelOptions> = {
  name: 'attention',
  forward({ k, save }, [q, kk, v], options) {
    const { o, lse } = k.attention(q!, kk!, v!, options);
    save(q!, kk!, v!, o, lse);
    return o;
  },
  backward({ k, saved }, dy, options) {
    const [q, kk, v, o, lse] = saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
    const { dq, dk, dv } = k.attentionBackward(q, kk, v, o, lse, dy, options);
    return [dq, dk, dv];
  },
};

/**
 * Scaled dot-product attention on a family's kernels: q [B, Hq, Nq, D], k [B, Hkv, Nk, D],
 * v [B, Hkv, Nk, Dv] (GQA when Hkv divides Hq) -> [B, Hq, Nq, Dv]. The forward keeps the LSE
 * and the backward is the family's own (FlashAttention-2's Algorithm 2 for 'flash').
 */
export function attention(q: VarLike, k: VarLike, v: VarLike, options: AttentionOptions = {}): Var {
  if (options === null || typeof options !== 'object')
    throw new ValueError(
      `attention: options expected an object, got ${describe(options)}`,
      'options',
    );
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
  const { family = 'flash', causal, scale, window } = options;
  if (family === 'standard') return standardAttention(q, k, v, options);
  const opts: AttentionKernelOptions = { family };
  if (causal !== undefined) opts.causal = causal;
  if (scale !== undefined) opts.scale = scale;
  if (window !== undefined) opts.window = window;
  return apply(attentionOp, [q, k, v], opts);
}
