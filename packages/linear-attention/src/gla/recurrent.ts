import {
  type Arr,
  type GlaBackwardIo,
  type GlaDims,
  type GlaForwardIo,
  loadState,
  storeState,
} from './arrays.js';

/**
 * GLA's recurrent form (fla's fused_recurrent_gla) on the TS backend: per sequence and head the
 * K x V state, one token at a time (in reverse order with `reverse`):
 *   S_t = diag(e^{gk_t}) S_{t-1} + k_t^T v_t,   o_t = (scale q_t) S_t.
 * The decode / step form, and the float64-exact check of the chunk form on long sequences.
 */

/** Steps between the states the backward keeps (it recomputes the ones between). */
export const RECURRENT_CHECKPOINT = 64;

/** Row (b, t, h) of the i-th processed token of a sequence. */
function rowOf(
  d: GlaDims,
  batch: number,
  bos: number,
  eos: number,
  h: number,
  i: number,
  reverse: boolean,
) {
  const t = reverse ? eos - 1 - i : bos + i;
  return (batch * d.T + t) * d.H + h;
}

/** S <- diag(e^{gk}) S + k^T v for the token at row `row`. */
function step(S: Float64Array, io: { k: Arr; v: Arr; gk: Arr }, row: number, K: number, V: number) {
  const kk = row * K;
  const vv = row * V;
  for (let x = 0; x < K; x++) {
    const e = Math.exp(io.gk[kk + x]!);
    const kx = io.k[kk + x]!;
    const r = x * V;
    for (let y = 0; y < V; y++) S[r + y] = e * S[r + y]! + kx * io.v[vv + y]!;
  }
}

export function recurrentGlaForwardArrays(d: GlaDims, io: GlaForwardIo, reverse: boolean): void {
  const { H, K, V, scale } = d;
  const S = new Float64Array(K * V);
  const acc = new Float64Array(V);
  for (const seq of d.seqs) {
    for (let h = 0; h < H; h++) {
      loadState(io.h0, seq.index * H + h, d, S);
      for (let i = 0; i < seq.eos - seq.bos; i++) {
        const row = rowOf(d, seq.batch, seq.bos, seq.eos, h, i, reverse);
        step(S, io, row, K, V);
        acc.fill(0);
        for (let x = 0; x < K; x++) {
          const f = scale * io.q[row * K + x]!;
          const r = x * V;
          for (let y = 0; y < V; y++) acc[y] = acc[y]! + f * S[r + y]!;
        }
        for (let y = 0; y < V; y++) io.o[row * V + y] = acc[y]!;
      }
      storeState(io.ht, seq.index * H + h, d, S);
    }
  }
}

/**
 * Reverse mode through the recurrence. The states are kept every RECURRENT_CHECKPOINT steps and
 * recomputed within a segment (memory O((T / 64 + 64) K V), not O(T K V)); with dS the gradient
 * of S_t (dht after the last token):
 *   dS += scale q_t^T dO_t;  dq_t = scale S_t dO_t;  dk_t = dS v_t;  dv_t = k_t dS;
 *   dgk_t = e^{gk_t} * rowsum(dS * S_{t-1});  dS <- diag(e^{gk_t}) dS.
 * dgk comes straight from the states, so it keeps its relative precision for any gate.
 */
export function recurrentGlaBackwardArrays(d: GlaDims, io: GlaBackwardIo, reverse: boolean): void {
  const { H, K, V, scale } = d;
  const KV = K * V;
  const SEG = RECURRENT_CHECKPOINT;
  const S = new Float64Array(KV);
  const dS = new Float64Array(KV);
  const states = new Float64Array((SEG + 1) * KV);
  for (const seq of d.seqs) {
    const len = seq.eos - seq.bos;
    const segments = Math.ceil(len / SEG);
    const checkpoints = new Float64Array(segments * KV);
    const row = (h: number, i: number) => rowOf(d, seq.batch, seq.bos, seq.eos, h, i, reverse);
    for (let h = 0; h < H; h++) {
      const block = seq.index * H + h;
      loadState(io.h0, block, d, S);
      for (let i = 0; i < len; i++) {
        if (i % SEG === 0) checkpoints.set(S, (i / SEG) * KV);
        step(S, io, row(h, i), K, V);
      }
      loadState(io.dht, block, d, dS);
      for (let c = segments - 1; c >= 0; c--) {
        const i0 = c * SEG;
        const n = Math.min(len, i0 + SEG) - i0;
        states.set(checkpoints.subarray(c * KV, (c + 1) * KV), 0);
        for (let j = 0; j < n; j++) {
          states.copyWithin((j + 1) * KV, j * KV, (j + 1) * KV);
          step(states.subarray((j + 1) * KV, (j + 2) * KV), io, row(h, i0 + j), K, V);
        }
        for (let j = n - 1; j >= 0; j--) {
          const r = row(h, i0 + j);
          const kk = r * K;
          const vv = r * V;
          const St = (j + 1) * KV;
          const Sp = j * KV;
          for (let x = 0; x < K; x++) {
            const qx = scale * io.q[kk + x]!;
            const o = x * V;
            let dq = 0;
            for (let y = 0; y < V; y++) {
              const g = io.dO[vv + y]!;
              dS[o + y] = dS[o + y]! + qx * g;
              dq += states[St + o + y]! * g;
            }
            io.dq[kk + x] = scale * dq;
          }
          for (let y = 0; y < V; y++) {
            let dv = 0;
            for (let x = 0; x < K; x++) dv += io.k[kk + x]! * dS[x * V + y]!;
            io.dv[vv + y] = dv;
          }
          for (let x = 0; x < K; x++) {
            const decay = Math.exp(io.gk[kk + x]!);
            const o = x * V;
            let dk = 0;
            let dg = 0;
            for (let y = 0; y < V; y++) {
              const g = dS[o + y]!;
              dk += g * io.v[vv + y]!;
              dg += g * states[Sp + o + y]!;
              dS[o + y] = decay * g;
            }
            io.dk[kk + x] = dk;
            io.dgk[kk + x] = decay * dg;
          }
        }
      }
      storeState(io.dh0, block, d, dS);
    }
  }
}
