import { allocF32, encodeOutput } from '@attnkit/skeleton';
import { DeviceError, Tensor } from '@attnkit/tensor';
import type { Arr, GlaDims } from './arrays.js';
import { chunkGlaBackwardArrays, chunkGlaForwardArrays } from './chunk.js';
import { checkGateValues, type GlaProblem } from './options.js';
import { recurrentGlaBackwardArrays, recurrentGlaForwardArrays } from './recurrent.js';

/**
 * The TS backend: decodes cpu tensors (f32 read in place; f16/bf16 decoded to f32; f64 kept),
 * checks the gates, runs the chunk or recurrent kernel and encodes the results: o, dq, dk, dv
 * in q's dtype, dgk in gk's, dh0 in initialState's, the final state in f32 (f64 for f64 inputs:
 * fla keeps states in f32 too). Outputs are allocated through @attnkit/skeleton's allocF32 so the
 * tests can poison them.
 */

function read(t: Tensor, name: string): Arr {
  if (t.device !== 'cpu')
    throw new DeviceError(
      `${name}: expected a cpu tensor for the 'ts' backend, got one on ${t.device}`,
      name,
    );
  if (t.dtype === 'f64') return t.data<'f64'>();
  if (t.dtype === 'f32') return t.data<'f32'>();
  return t.toFloat32Array();
}

function alloc(n: number, dtype: Tensor['dtype']): Arr {
  return dtype === 'f64' ? new Float64Array(n) : allocF32(n, 'output');
}

function encode(data: Arr, shape: readonly number[], dtype: Tensor['dtype']): Tensor {
  if (data instanceof Float64Array) return Tensor.from(data, shape, 'f64');
  return encodeOutput(data, shape, dtype);
}

function dims(p: GlaProblem): GlaDims {
  return { T: p.T, H: p.H, K: p.K, V: p.V, scale: p.scale, seqs: p.seqs };
}

/**
 * The forward on the ts kernels, synchronously, for a problem resolveGla validated: exported
 * (beside the async chunkGla / fusedRecurrentGla, which run this through the registry) for
 * callers whose kernels must return tensors at once (@attnkit/nn's `gla` op on its ts backend).
 * Returns o [B, T, H, V] in q's dtype and, with outputFinalState, ht [N, H, K, V] (f32; f64 for
 * f64 inputs). Checks the gate values first (a ValueError naming gk).
 */
export function glaForwardTs(
  p: GlaProblem,
  t: { q: Tensor; k: Tensor; v: Tensor; gk: Tensor },
): { o: Tensor; ht?: Tensor } {
  const gk = read(t.gk, 'gk');
  checkGateValues(gk, t.gk.shape);
  const wide = t.q.dtype === 'f64';
  const stateDType = wide ? 'f64' : 'f32';
  const o = alloc(p.B * p.T * p.H * p.V, t.q.dtype);
  const ht = p.outputFinalState ? alloc(p.N * p.H * p.K * p.V, stateDType) : undefined;
  const io = {
    q: read(t.q, 'q'),
    k: read(t.k, 'k'),
    v: read(t.v, 'v'),
    gk,
    h0: p.initialState ? read(p.initialState, 'initialState') : undefined,
    o,
    ht,
  };
  if (p.form === 'chunk') chunkGlaForwardArrays(dims(p), io, p.chunkSize);
  else recurrentGlaForwardArrays(dims(p), io, p.reverse);
  const out: { o: Tensor; ht?: Tensor } = { o: encode(o, t.v.shape, t.q.dtype) };
  if (ht) out.ht = encode(ht, [p.N, p.H, p.K, p.V], stateDType);
  return out;
}

/**
 * The backward on the ts kernels, synchronously (exported for the same callers as glaForwardTs):
 * dq, dk, dv in q's dtype, dgk in gk's and, with p.initialState, dh0 in its dtype; `dht` is the
 * final state's gradient when a loss reads it.
 */
export function glaBackwardTs(
  p: GlaProblem,
  t: { q: Tensor; k: Tensor; v: Tensor; gk: Tensor; do: Tensor; dht?: Tensor | undefined },
): { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor } {
  const gk = read(t.gk, 'gk');
  checkGateValues(gk, t.gk.shape);
  const { B, T, H, K, V, N } = p;
  const h0 = p.initialState;
  const io = {
    q: read(t.q, 'q'),
    k: read(t.k, 'k'),
    v: read(t.v, 'v'),
    gk,
    h0: h0 ? read(h0, 'initialState') : undefined,
    dO: read(t.do, 'dO'),
    dht: t.dht ? read(t.dht, 'dht') : undefined,
    dq: alloc(B * T * H * K, t.q.dtype),
    dk: alloc(B * T * H * K, t.q.dtype),
    dv: alloc(B * T * H * V, t.q.dtype),
    dgk: alloc(B * T * H * K, t.gk.dtype),
    dh0: h0 ? alloc(N * H * K * V, h0.dtype) : undefined,
  };
  if (p.form === 'chunk') chunkGlaBackwardArrays(dims(p), io, p.chunkSize);
  else recurrentGlaBackwardArrays(dims(p), io, p.reverse);
  const out: { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor } = {
    dq: encode(io.dq, t.q.shape, t.q.dtype),
    dk: encode(io.dk, t.k.shape, t.q.dtype),
    dv: encode(io.dv, t.v.shape, t.q.dtype),
    dgk: encode(io.dgk, t.gk.shape, t.gk.dtype),
  };
  if (h0 && io.dh0) out.dh0 = encode(io.dh0, h0.shape, h0.dtype);
  return out;
}
