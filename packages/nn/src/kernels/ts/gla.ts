import {
  type GlaOptions,
  type GlaProblem,
  glaBackwardTs,
  glaForwardTs,
  resolveGla,
} from '@attnkit/linear-attention';
import type { Tensor } from '@attnkit/tensor';
import type { GlaKernelOptions } from '../table.js';

/**
 * GLA on the ts backend: @attnkit/linear-attention's synchronous ts kernels (the chunk and
 * recurrent forms, f32 and f64), nothing of GLA's math here. Also what the native and webgpu
 * kernels resolve their problem with (the same options, the same validation).
 */

/** linear-attention's options of a kernel call (undefined ones left out). */
export function glaOptions(options: GlaKernelOptions, forward: boolean): GlaOptions {
  const o: GlaOptions = {};
  if (options.scale !== undefined) o.scale = options.scale;
  if (options.initialState !== undefined) o.initialState = options.initialState;
  if (forward && options.outputFinalState) o.outputFinalState = true;
  return o;
}

/** The validated problem (typed errors naming the argument), as linear-attention's backends get it. */
export function glaProblemOf(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  options: GlaKernelOptions,
  dO?: Tensor,
): GlaProblem {
  return resolveGla(
    q,
    k,
    v,
    gk,
    glaOptions(options, dO === undefined),
    options.form,
    dO === undefined ? undefined : { dO },
  );
}

export function gla(q: Tensor, k: Tensor, v: Tensor, gk: Tensor, options: GlaKernelOptions) {
  const r = glaForwardTs(glaProblemOf(q, k, v, gk, options), { q, k, v, gk });
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
  const { dq, dk, dv, dgk } = glaBackwardTs(p, { q, k, v, gk, do: dO });
  return { dq, dk, dv, dgk };
}
