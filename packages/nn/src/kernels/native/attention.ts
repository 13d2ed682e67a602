import { resolveAttentionProblem } from '@attnkit/attention';
import type { Tensor } from '@attnkit/tensor';
import { flashOnly } from '../shared.js';
import type { AttentionKernelOptions } from '../table.js';
import { f32, out, run, tensorOf } from './engine.js';

/**
 * The native attention kernels: the engine's FlashAttention-2 ops ('attention.forward' with
 * the LSE, 'attention.backward'), on the problem @attnkit/attention resolves from q, k, v (BHND)
 * and the options, as the flash family's own native backend does. Other families have no
 * synchronous native entry yet: an UnsupportedError, never another family's kernel.
 */
function problem(op: string, q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions) {
  return resolveAttentionProblem(q, k, v, flashOnly(op, 'native', q, options, true));
}

export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions) {
  const p = problem('attention', q, k, v, options);
  const o = out(p.batch * p.hq * p.maxSeqQ * p.dv);
  const lse = out(p.batch * p.hq * p.maxSeqQ);
  run(
    'attention.forward',
    { ...p },
    { q: f32(q, 'attention', 'q'), k: f32(k, 'attention', 'k'), v: f32(v, 'attention', 'v') },
    { o, lse },
  );
  return {
    o: tensorOf(o, [p.batch, p.hq, p.maxSeqQ, p.dv]),
    lse: tensorOf(lse, [p.batch, p.hq, p.maxSeqQ]),
  };
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
  const p = problem('attention', q, k, v, options);
  const [dq, dk, dv] = [out(q.size), out(k.size), out(v.size)];
  run(
    'attention.backward',
    { ...p },
    {
      q: f32(q, 'attention', 'q'),
      k: f32(k, 'attention', 'k'),
      v: f32(v, 'attention', 'v'),
      o: f32(o, 'attention', 'o'),
      lse: f32(lse, 'attention', 'lse'),
      dO: f32(dO, 'attention', 'dO'),
    },
    { dq, dk, dv },
  );
  return { dq: tensorOf(dq, q.shape), dk: tensorOf(dk, k.shape), dv: tensorOf(dv, v.shape) };
}
