import { glaRecurrentReference, glaRecurrentReferenceBackward } from '@attnkit/attention';
import { Tensor } from '@attnkit/tensor';
import { type GlaOptions, type GlaProblem, resolveGla } from './options.js';

/**
 * Float64 references of GLA with every option of the kernels (fla's naive.py role): the
 * recurrent reference of @attnkit/attention (KERNELS.md "Gated linear attention", B rows of T
 * tokens) run once per sequence, so that cuSeqlens (packed varlen) and reverse (fla's
 * fused_recurrent_gla) are covered too. The chunk size is ignored: every form computes the same
 * function.
 */
export interface GlaReferenceOptions extends GlaOptions {
  reverse?: boolean;
  chunkSize?: number;
}

function resolve(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  options: GlaReferenceOptions,
  grads?: { dO: Tensor; dht?: Tensor | undefined },
): GlaProblem {
  const { chunkSize: _c, backend: _b, ...rest } = options;
  return resolveGla(q, k, v, gk, rest, 'recurrent', grads);
}

/** Rows of sequence `seq` (in processing order) of a [B, T, H, W] array, as a [1, L, H, W] f64 tensor. */
function take(
  data: Float64Array,
  p: GlaProblem,
  seq: GlaProblem['seqs'][number],
  W: number,
): Tensor {
  const L = seq.eos - seq.bos;
  const row = p.H * W;
  const out = new Float64Array(L * row);
  for (let i = 0; i < L; i++) {
    const t = p.reverse ? seq.eos - 1 - i : seq.bos + i;
    out.set(data.subarray((seq.batch * p.T + t) * row, (seq.batch * p.T + t + 1) * row), i * row);
  }
  return Tensor.from(out, [1, L, p.H, W], 'f64');
}

/** Inverse of take: writes the [1, L, H, W] rows of `x` back to sequence `seq`'s rows of `data`. */
function put(
  x: Tensor,
  data: Float64Array,
  p: GlaProblem,
  seq: GlaProblem['seqs'][number],
  W: number,
): void {
  const src = x.toFloat64Array();
  const row = p.H * W;
  for (let i = 0; i < seq.eos - seq.bos; i++) {
    const t = p.reverse ? seq.eos - 1 - i : seq.bos + i;
    data.set(src.subarray(i * row, (i + 1) * row), (seq.batch * p.T + t) * row);
  }
}

function stateOf(t: Tensor | undefined, n: number): Tensor | undefined {
  return t === undefined ? undefined : t.slice(0, n, n + 1);
}

/** o [B, T, H, V] and, with outputFinalState, finalState [N, H, K, V], in float64. */
export function glaReference(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  options: GlaReferenceOptions = {},
): { o: Tensor; finalState?: Tensor } {
  const p = resolve(q, k, v, gk, options);
  const [Q, Kt, Vt, G] = [
    q.toFloat64Array(),
    k.toFloat64Array(),
    v.toFloat64Array(),
    gk.toFloat64Array(),
  ];
  const O = new Float64Array(p.B * p.T * p.H * p.V);
  const HT = new Float64Array(p.N * p.H * p.K * p.V);
  for (const seq of p.seqs) {
    const r = glaRecurrentReference(
      take(Q, p, seq, p.K),
      take(Kt, p, seq, p.K),
      take(Vt, p, seq, p.V),
      take(G, p, seq, p.K),
      {
        scale: p.scale,
        initialState: stateOf(p.initialState, seq.index),
        outputFinalState: true,
      },
    );
    put(r.o, O, p, seq, p.V);
    HT.set(r.finalState!.toFloat64Array(), seq.index * p.H * p.K * p.V);
  }
  const out: { o: Tensor; finalState?: Tensor } = { o: Tensor.from(O, v.shape, 'f64') };
  if (p.outputFinalState) out.finalState = Tensor.from(HT, [p.N, p.H, p.K, p.V], 'f64');
  return out;
}

/** dq, dk, dv, dgk (and dh0 with initialState) for the upstream gradients dO and dht, in float64. */
export function glaReferenceBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  gk: Tensor,
  dO: Tensor,
  options: GlaReferenceOptions & { dht?: Tensor | undefined } = {},
): { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor } {
  const { dht, ...rest } = options;
  const p = resolve(q, k, v, gk, rest, { dO, dht });
  const [Q, Kt, Vt, G] = [
    q.toFloat64Array(),
    k.toFloat64Array(),
    v.toFloat64Array(),
    gk.toFloat64Array(),
  ];
  const D = dO.toFloat64Array();
  const dQ = new Float64Array(Q.length);
  const dK = new Float64Array(Kt.length);
  const dV = new Float64Array(Vt.length);
  const dG = new Float64Array(G.length);
  const dH0 = new Float64Array(p.N * p.H * p.K * p.V);
  for (const seq of p.seqs) {
    const g = glaRecurrentReferenceBackward(
      take(Q, p, seq, p.K),
      take(Kt, p, seq, p.K),
      take(Vt, p, seq, p.V),
      take(G, p, seq, p.K),
      take(D, p, seq, p.V),
      {
        scale: p.scale,
        initialState: stateOf(p.initialState, seq.index) ?? Tensor.zeros([1, p.H, p.K, p.V], 'f64'),
        dFinalState: stateOf(dht, seq.index),
      },
    );
    put(g.dq, dQ, p, seq, p.K);
    put(g.dk, dK, p, seq, p.K);
    put(g.dv, dV, p, seq, p.V);
    put(g.dgk, dG, p, seq, p.K);
    dH0.set(g.dh0!.toFloat64Array(), seq.index * p.H * p.K * p.V);
  }
  const out: { dq: Tensor; dk: Tensor; dv: Tensor; dgk: Tensor; dh0?: Tensor } = {
    dq: Tensor.from(dQ, q.shape, 'f64'),
    dk: Tensor.from(dK, k.shape, 'f64'),
    dv: Tensor.from(dV, v.shape, 'f64'),
    dgk: Tensor.from(dG, gk.shape, 'f64'),
  };
  if (p.initialState) out.dh0 = Tensor.from(dH0, p.initialState.shape, 'f64');
  return out;
}
