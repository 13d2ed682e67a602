import { type KernelPass, type KernelTensors, registerKernel } from '@attnkit/attention';
import { describe, type Tensor, ValueError } from '@attnkit/tensor';
import { type GlaForm, type GlaProblem, resolveGla } from './options.js';
import { glaBackwardTs, glaForwardTs } from './ts-backend.js';

/**
 * GLA in the family x backend registry: family 'gla', one registration per (pass, backend)
 * serving both forms, chosen by the `form` option ('chunk', the default, or 'recurrent').
 *
 * The contract a backend implements to plug in (native and WebGPU register the same way):
 * - forward run(inputs, options): inputs { q, k, v, gk } (layout BTHK: q, k, gk [B, T, H, K],
 *   v [B, T, H, V]); options as chunkGla / fusedRecurrentGla take them (scale, initialState
 *   [N, H, K, V], outputFinalState, cuSeqlens, chunkSize or reverse, backend) plus `form`.
 *   Returns { o [B, T, H, V] in q's dtype, ht [N, H, K, V] (f32) with outputFinalState }.
 * - backward run(inputs, options): inputs { q, k, v, gk, do [B, T, H, V], dht? [N, H, K, V] }
 *   (o and ht may be there too and are not needed); the same options. Returns { dq, dk, dv in
 *   q's dtype, dgk in gk's, dh0 in initialState's dtype (only with initialState) }.
 * - Validate with glaProblem(pass, inputs, options) (typed errors naming the argument; it gives the
 *   dims, sequences, scale, chunk size) and, where the gates are readable, checkGateValues.
 *   Decline in supports() what you cannot run (f64 inputs, a form, a chunk size), with a
 *   sentence saying why; the registry turns it into an UnsupportedError.
 * Priorities as the other families: ts 10, native 20, webgpu 30.
 */
export const GLA_FAMILY = 'gla';

export const GLA_FORWARD_OUTPUTS = ['o', 'ht'] as const;
export const GLA_BACKWARD_OUTPUTS = ['dq', 'dk', 'dv', 'dgk', 'dh0'] as const;

/** The registry's `form` option: 'chunk' (default) or 'recurrent'. */
export function glaFormOf(options: Readonly<Record<string, unknown>>): GlaForm {
  const f = options.form;
  if (f === undefined || f === 'chunk') return 'chunk';
  if (f === 'recurrent') return 'recurrent';
  throw new ValueError(`form: expected "chunk" or "recurrent", got ${describe(f)}`, 'form');
}

/** Validates a registry call (inputs by name, options with `form`) and resolves it. */
export function glaProblem(
  pass: KernelPass,
  t: KernelTensors,
  options: Record<string, unknown>,
): GlaProblem {
  const grads = pass === 'backward' ? { dO: t.do, dht: t.dht } : undefined;
  return resolveGla(t.q, t.k, t.v, t.gk, options, glaFormOf(options), grads);
}

registerKernel({
  family: GLA_FAMILY,
  pass: 'forward',
  backend: 'ts',
  priority: 10,
  devices: ['cpu'],
  supports: () => true,
  outputs: GLA_FORWARD_OUTPUTS,
  run: async (t, options) => {
    const p = glaProblem('forward', t, options);
    return { ...glaForwardTs(p, t as { q: Tensor; k: Tensor; v: Tensor; gk: Tensor }) };
  },
});

registerKernel({
  family: GLA_FAMILY,
  pass: 'backward',
  backend: 'ts',
  priority: 10,
  devices: ['cpu'],
  supports: () => true,
  outputs: GLA_BACKWARD_OUTPUTS,
  run: async (t, options) => {
    const p = glaProblem('backward', t, options);
    return {
      ...glaBackwardTs(
        p,
        t as { q: Tensor; k: Tensor; v: Tensor; gk: Tensor; do: Tensor; dht?: Tensor },
      ),
    };
  },
});
