import {
  encodeFlashAttention,
  encodeFlashAttentionBackward,
  flashAttention,
  flashAttentionBackward,
} from '@attnkit/flash-attention';
import { Tensor } from '@attnkit/tensor';
import { WebGpuStorage } from '@attnkit/webgpu';
import { flashOnly } from '../shared.js';
import type { AttentionKernelOptions } from '../table.js';
import { gpuContext } from './context.js';
import { output, type QueuedStorage, queueOf, storageOf } from './queue.js';

/**
 * Attention on webgpu tensors: the families' own WebGPU kernels (FlashAttention-2's forward
 * with LSE, and its backward: @attnkit/flash-attention on the skeleton's WGSL). Once their
 * pipelines are compiled they are encoded synchronously into the queue's encoder
 * (encodeFlashAttention), writing straight into the outputs this kernel returns; the first call
 * of a shape (and what the synchronous path declines) runs the async API inside the queue, its
 * results copied into those outputs.
 */
function familyOptions(op: string, q: Tensor, options: AttentionKernelOptions) {
  return { ...flashOnly(op, 'webgpu', q, options, false), backend: 'webgpu' as const };
}

const storages = (ts: readonly Tensor[]) => ts.map((t) => t.storage as WebGpuStorage);

/**
 * The tensor as the family's kernels see it when the queue reaches them: a scope may have
 * disposed it since (its buffer stays fenced until this work is submitted), and the families
 * check liveness, so a disposed one is lent as an untracked storage on the same buffer. Outputs
 * too: a gradient nobody needs is disposed before its task runs.
 */
function lent(t: Tensor): Tensor {
  const s = t.storage as WebGpuStorage;
  if (!s.isDisposed) return t;
  const view = new WebGpuStorage(s.ctx, s.dtype, s.length, s.buffer);
  // Never disposed nor collected into the pool: the owner's release covers the buffer.
  s.ctx.untrack(view);
  return new Tensor(view, t.shape, t.strides, t.offset);
}

export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionKernelOptions) {
  const opts = familyOptions('attention', q, options);
  const ctx = gpuContext('attention');
  for (const [t, name] of [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
  ] as const)
    storageOf(t, 'attention', name, ctx);
  const [b, hq, nq] = q.shape as [number, number, number, number];
  const o = output(ctx, [b, hq, nq, v.shape[3]!], q.dtype);
  const lse = output(ctx, [b, hq, nq], 'f32');
  const queue = queueOf(ctx);
  queue.external(
    'attention',
    storages([q, k, v]),
    storages([o, lse]),
    async () => {
      const r = await flashAttention(lent(q), lent(k), lent(v), opts);
      queue.copyNow(r.o, o.storage as QueuedStorage);
      queue.copyNow(r.lse, lse.storage as QueuedStorage);
      r.o.dispose();
      r.lse.dispose();
    },
    (sink) =>
      encodeFlashAttention(lent(q), lent(k), lent(v), opts, {
        sink,
        outputs: { o: lent(o), lse: lent(lse) },
      }) !== undefined,
  );
  return { o, lse };
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
  const opts = familyOptions('attention', q, options);
  const ctx = gpuContext('attention');
  for (const [t, name] of [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
    [o, 'o'],
    [lse, 'lse'],
    [dO, 'dO'],
  ] as const)
    storageOf(t, 'attention', name, ctx);
  const grads = {
    dq: output(ctx, q.shape, q.dtype),
    dk: output(ctx, k.shape, k.dtype),
    dv: output(ctx, v.shape, v.dtype),
  };
  const queue = queueOf(ctx);
  queue.external(
    'attention backward',
    storages([q, k, v, o, lse, dO]),
    storages([grads.dq, grads.dk, grads.dv]),
    async () => {
      const r = await flashAttentionBackward(
        lent(q),
        lent(k),
        lent(v),
        lent(o),
        lent(lse),
        lent(dO),
        opts,
      );
      for (const name of ['dq', 'dk', 'dv'] as const) {
        queue.copyNow(r[name], grads[name].storage as QueuedStorage);
        r[name].dispose();
      }
    },
    (sink) =>
      encodeFlashAttentionBackward(lent(q), lent(k), lent(v), lent(o), lent(lse), lent(dO), opts, {
        sink,
        outputs: { dq: lent(grads.dq), dk: lent(grads.dk), dv: lent(grads.dv) },
      }) !== undefined,
  );
  return grads;
}
