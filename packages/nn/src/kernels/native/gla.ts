import { glaBackwardNativeSync, glaForwardNativeSync } from '@attnkit/linear-attention';
import type { Tensor } from '@attnkit/tensor';
import type { GlaKernelOptions } from '../table.js';
import { glaProblemOf } from '../ts/gla.js';
import { checkF32, nativeEngine } from './engine.js';

/**
 * GLA on the native engine (ops gla.forward / gla.backward: @attnkit/linear-attention's C++
 * chunk and recurrent kernels), called synchronously on nn's engine handle through
 * linear-attention's glaForwardNativeSync / glaBackwardNativeSync. f32 only (index.ts routes f64
 * to the ts kernels).
 */

function checkInputs(op: string, ts: readonly (readonly [Tensor | undefined, string])[]): void {
  for (const [t, name] of ts) if (t) checkF32(t, op, name);
}

export function gla(q: Tensor, k: Tensor, v: Tensor, gk: Tensor, options: GlaKernelOptions) {
  const p = glaProblemOf(q, k, v, gk, options);
  checkInputs('gla', [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
    [gk, 'gk'],
  ]);
  const r = glaForwardNativeSync(nativeEngine(), p, { q, k, v, gk });
  return r.ht ? { o: r.o, finalState: r.ht } : { o: r.o };
}

export function glaBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  dO: Tensor,
  options: GlaKernelOptions,
) {
  const p = glaProblemOf(q, k, v, gk, options, dO);
  checkInputs('gla', [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
    [gk, 'gk'],
    [dO, 'dO'],
  ]);
  const { dq, dk, dv, dgk } = glaBackwardNativeSync(nativeEngine(), p, { q, k, v, gk, do: dO });
  return { dq, dk, dv, dgk };
}
