import type { Tensor } from '@attnkit/tensor';
import { attentionFamily } from '../families.js';
import type { AttentionKernelOptions } from '../table.js';
import { gpuContext } from './context.js';
import {
  lent,
  output,
  type QueuedStorage,
  queueOf,
  storageOf,
  storagesOf as storages,
} from './queue.js';

/**
 * Attention on webgpu tensors: the family's own WebGPU kernels (the skeleton's WGSL with the
 * family's hooks: FlashAttention-2's forward with LSE and its backward, FlashSigmoid's). Once
 * their pipelines are compiled they are encoded synchronously into the queue's encoder (the
 * family's encodeForward / encodeBackward), writing straight into the outputs this kernel
 * returns; the first call of a shape (and what the synchronous path declines) runs the async
 * API inside the queue, its results copied into those outputs.
 */
function familyOf(op: string, q: Tensor, options: AttentionKernelOptions) {
  const { fam, opts } = attentionFamily(op, 'webgpu', q, options, false);
  return { fam, opts: { ...opts, backend: 'webgpu' as const } };
}

export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions) {
  const { fam, opts } = familyOf('attention', q, options);
  const ctx = gpuContext('attention');
  for (const [t, name] of [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
  ] as const)
    storageOf(t, 'attention', name, ctx);
  const [b, hq, nq] = q.shape as [number, number, number, number];
  const o = output(ctx, [b, hq, nq, v.shape[3]!], q.dtype);
  const lse = fam.lse ? output(ctx, [b, hq, nq], 'f32') : undefined;
  const queue = queueOf(ctx);
  queue.external(
    'attention',
    storages([q, k, v]),
    storages(lse ? [o, lse] : [o]),
    async () => {
      const r = await fam.family.forward(lent(q), lent(k), lent(v), opts);
      queue.copyNow(r.o, o.storage as QueuedStorage);
      r.o.dispose();
      if (lse) queue.copyNow(r.lse!, lse.storage as QueuedStorage);
      r.lse?.dispose();
    },
    (sink) =>
      fam.family.encodeForward(lent(q), lent(k), lent(v), opts, {
        sink,
        outputs: lse ? { o: lent(o), lse: lent(lse) } : { o: lent(o) },
      }) !== undefined,
  );
  return { o, lse };
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
  const { fam, opts } = familyOf('attention', q, options);
  const ctx = gpuContext('attention');
  // What the family's backward reads: o and lse for softmax, neither for a pointwise family.
  const read: [Tensor, string][] = [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
    ...(fam.lse
      ? ([
          [o!, 'o'],
          [lse!, 'lse'],
        ] as [Tensor, string][])
      : []),
    [dO, 'dO'],
  ];
  for (const [t, name] of read) storageOf(t, 'attention', name, ctx);
  // Lent when the queue reaches the task (as q, k, v below), not now.
  const O = () => (fam.lse ? lent(o!) : undefined);
  const LSE = () => (fam.lse ? lent(lse!) : undefined);
  const grads = {
    dq: output(ctx, q.shape, q.dtype),
    dk: output(ctx, k.shape, k.dtype),
    dv: output(ctx, v.shape, v.dtype),
  };
  const queue = queueOf(ctx);
  queue.external(
    'attention backward',
    storages(read.map(([t]) => t)),
    storages([grads.dq, grads.dk, grads.dv]),
    async () => {
      const r = await fam.family.backward(lent(q), lent(k), lent(v), O(), LSE(), lent(dO), opts);
      for (const name of ['dq', 'dk', 'dv'] as const) {
        queue.copyNow(r[name], grads[name].storage as QueuedStorage);
        r[name].dispose();
      }
    },
    (sink) =>
      fam.family.encodeBackward(lent(q), lent(k), lent(v), O(), LSE(), lent(dO), opts, {
        sink,
        outputs: { dq: lent(grads.dq), dk: lent(grads.dk), dv: lent(grads.dv) },
      }) !== undefined,
  );
  return grads;
}
