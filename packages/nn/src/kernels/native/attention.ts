import { checkFiniteValues, nativeAttentionProblem } from '@attnkit/skeleton';
import type { Tensor } from '@attnkit/tensor';
import { attentionFamily } from '../families.js';
import type { AttentionKernelOptions } from '../table.js';
import { f32, out, run, tensorOf } from './engine.js';

/**
 * The native attention kernels: the engine's ops ('attention.forward', with the LSE for
 * softmax; 'attention.backward') on the problem and hooks the family resolves from q, k, v
 * (BHND) and the options, built as the family's own native backend builds them (the skeleton's
 * nativeAttentionProblem: normalisation, planned query block), but called synchronously.
 */
function resolve(q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions) {
  const { fam, opts } = attentionFamily('attention', 'native', q, options, true);
  const { p, hooks } = fam.family.resolve(q, k, v, opts);
  return { p, problem: nativeAttentionProblem(p, hooks), lse: fam.lse };
}

export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions) {
  const { p, problem, lse: softmax } = resolve(q, k, v, options);
  const o = out(p.batch * p.hq * p.maxSeqQ * p.dv);
  const lse = softmax ? out(p.batch * p.hq * p.maxSeqQ) : undefined;
  run(
    'attention.forward',
    problem,
    { q: f32(q, 'attention', 'q'), k: f32(k, 'attention', 'k'), v: f32(v, 'attention', 'v') },
    lse ? { o, lse } : { o },
  );
  return {
    o: tensorOf(o, [p.batch, p.hq, p.maxSeqQ, p.dv]),
    lse: lse && tensorOf(lse, [p.batch, p.hq, p.maxSeqQ]),
  };
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
  const { problem, lse: softmax } = resolve(q, k, v, options);
  // A diverged forward's NaN / +inf LSE is a ValueError naming lse, not NaN gradients.
  if (softmax) checkFiniteValues('backward', { q, k, v, o: o!, lse: lse!, do: dO }, {});
  const [dq, dk, dv] = [out(q.size), out(k.size), out(v.size)];
  const inputs = {
    q: f32(q, 'attention', 'q'),
    k: f32(k, 'attention', 'k'),
    v: f32(v, 'attention', 'v'),
    dO: f32(dO, 'attention', 'dO'),
  };
  run(
    'attention.backward',
    problem,
    softmax
      ? { ...inputs, o: f32(o!, 'attention', 'o'), lse: f32(lse!, 'attention', 'lse') }
      : inputs,
    { dq, dk, dv },
  );
  return { dq: tensorOf(dq, q.shape), dk: tensorOf(dk, k.shape), dv: tensorOf(dv, v.shape) };
}
