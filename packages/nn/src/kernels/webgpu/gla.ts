import {
  chunkGla,
  chunkGlaBackward,
  fusedRecurrentGla,
  fusedRecurrentGlaBackward,
} from '@attnkit/linear-attention';
import type { Tensor } from '@attnkit/tensor';
import type { GlaKernelOptions } from '../table.js';
import { glaOptions, glaProblemOf } from '../ts/gla.js';
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
 * GLA on webgpu tensors: @attnkit/linear-attention's WGSL kernels (chunk and recurrent forms,
 * backend 'webgpu'), which only have an async API: each call is queued as external work
 * (queue.external), the family's results copied into the outputs this kernel returns at once, as
 * the attention kernel's first call of a shape is. The problem is validated here first (typed
 * errors at the call, not in the queue).
 */

function familyOptions(options: GlaKernelOptions, forward: boolean) {
  const o = glaOptions(options, forward);
  if (o.initialState) o.initialState = lent(o.initialState);
  return { ...o, backend: 'webgpu' };
}

function checkStorages(
  ctx: ReturnType<typeof gpuContext>,
  ts: readonly (readonly [Tensor | undefined, string])[],
) {
  for (const [t, name] of ts) if (t) storageOf(t, 'gla', name, ctx);
}

export function gla(q: Tensor, k: Tensor, v: Tensor, gk: Tensor, options: GlaKernelOptions) {
  const ctx = gpuContext('gla');
  const h0 = options.initialState;
  checkStorages(ctx, [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
    [gk, 'gk'],
    [h0, 'initialState'],
  ]);
  const p = glaProblemOf(q, k, v, gk, options);
  const o = output(ctx, [p.B, p.T, p.H, p.V], q.dtype);
  const finalState = options.outputFinalState
    ? output(ctx, [p.N, p.H, p.K, p.V], 'f32')
    : undefined;
  const queue = queueOf(ctx);
  queue.external('gla', storages([q, k, v, gk, h0]), storages([o, finalState]), async () => {
    const run = options.form === 'recurrent' ? fusedRecurrentGla : chunkGla;
    const r = await run(lent(q), lent(k), lent(v), lent(gk), familyOptions(options, true));
    queue.copyNow(r.o, o.storage as QueuedStorage);
    r.o.dispose();
    if (finalState) {
      queue.copyNow(r.finalState!, finalState.storage as QueuedStorage);
      r.finalState!.dispose();
    }
  });
  return finalState ? { o, finalState } : { o };
}

export function glaBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  dO: Tensor,
  options: GlaKernelOptions,
) {
  const ctx = gpuContext('gla');
  const h0 = options.initialState;
  checkStorages(ctx, [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
    [gk, 'gk'],
    [dO, 'dO'],
    [h0, 'initialState'],
  ]);
  glaProblemOf(q, k, v, gk, options, dO);
  const grads = {
    dq: output(ctx, q.shape, q.dtype),
    dk: output(ctx, k.shape, k.dtype),
    dv: output(ctx, v.shape, v.dtype),
    dgk: output(ctx, gk.shape, gk.dtype),
  };
  const queue = queueOf(ctx);
  queue.external(
    'gla backward',
    storages([q, k, v, gk, dO, h0]),
    storages([grads.dq, grads.dk, grads.dv, grads.dgk]),
    async () => {
      const run = options.form === 'recurrent' ? fusedRecurrentGlaBackward : chunkGlaBackward;
      const r = await run(
        lent(q),
        lent(k),
        lent(v),
        lent(gk),
        lent(dO),
        familyOptions(options, false),
      );
      for (const name of ['dq', 'dk', 'dv', 'dgk'] as const) {
        queue.copyNow(r[name], grads[name].storage as QueuedStorage);
        r[name].dispose();
      }
      r.dh0?.dispose();
    },
  );
  return grads;
}
