import type { Tensor } from '@attnkit/tensor';
import {
  type AttentionOptions,
  type AttentionProblem,
  allowed,
  kBase,
  keyRange,
  keyRow,
  lseBase,
  qBase,
  resolveAttentionProblem,
} from '../spec.js';
import { f64, readF64 } from './util.js';

/**
 * Float64 softmax attention (KERNELS.md "Common"): any float dtype in, f64 tensors out in the
 * layout of the inputs. One query row at a time, so memory is O(N) per head.
 */

/** Keys that query row i of (b, h) may attend (the mask rule of spec.ts). */
export function rowKeys(p: AttentionProblem, b: number, h: number, i: number): number[] {
  const [lo, hi] = keyRange(p, i, p.seqQ[b]!, p.seqK[b]!);
  const keys: number[] = [];
  for (let j = lo; j < hi; j++) if (allowed(p, b, h, i, j)) keys.push(j);
  return keys;
}

interface Row {
  keys: number[];
  /** Normalised probabilities P_ij over `keys`. */
  probs: Float64Array;
  lse: number;
}

/** S_ij = scale q_i . k_j over the row's keys, then a max-shifted softmax (no overflow). */
function softmaxRow(
  p: AttentionProblem,
  Q: Float64Array,
  K: Float64Array,
  b: number,
  h: number,
  i: number,
): Row {
  const keys = rowKeys(p, b, h, i);
  const probs = new Float64Array(keys.length);
  if (keys.length === 0) return { keys, probs, lse: Number.NEGATIVE_INFINITY };
  const qo = qBase(p, b, h, p.d) + i * p.qRow;
  const kb = kBase(p, b, Math.floor(h / p.group), p.d);
  let m = Number.NEGATIVE_INFINITY;
  for (let t = 0; t < keys.length; t++) {
    const ko = kb + keyRow(p, b, keys[t]!) * p.kRow;
    let s = 0;
    for (let c = 0; c < p.d; c++) s += Q[qo + c]! * K[ko + c]!;
    probs[t] = s * p.scale;
    if (probs[t]! > m) m = probs[t]!;
  }
  let l = 0;
  for (let t = 0; t < keys.length; t++) {
    probs[t] = Math.exp(probs[t]! - m);
    l += probs[t]!;
  }
  for (let t = 0; t < keys.length; t++) probs[t] = probs[t]! / l;
  return { keys, probs, lse: m + Math.log(l) };
}

/** O and LSE of softmax attention; a row with no allowed key has O = 0 and LSE = -Infinity. */
export function softmaxAttentionReference(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: AttentionOptions = {},
): { o: Tensor; lse: Tensor } {
  const p = resolveAttentionProblem(q, k, v, options);
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const O = new Float64Array(p.oShape.reduce((a, x) => a * x, 1));
  const LSE = new Float64Array(p.lseShape.reduce((a, x) => a * x, 1));
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.hq; h++) {
      const vb = kBase(p, b, Math.floor(h / p.group), p.dv);
      for (let i = 0; i < p.seqQ[b]!; i++) {
        const { keys, probs, lse } = softmaxRow(p, Q, K, b, h, i);
        LSE[lseBase(p, b, h) + i] = lse;
        const oo = qBase(p, b, h, p.dv) + i * p.oRow;
        for (let t = 0; t < keys.length; t++) {
          const vo = vb + keyRow(p, b, keys[t]!) * p.vRow;
          for (let c = 0; c < p.dv; c++) O[oo + c] = O[oo + c]! + probs[t]! * V[vo + c]!;
        }
      }
    }
  }
  return { o: f64(O, p.oShape), lse: f64(LSE, p.lseShape) };
}

/**
 * Gradients of softmax attention (FA2 backward, row by row): with P recomputed,
 * D_i = dO_i . O_i, dS_ij = P_ij (dO_i . v_j - D_i), dQ_i = scale sum_j dS_ij k_j,
 * dK_j = scale sum_i dS_ij q_i, dV_j = sum_i P_ij dO_i. dK and dV sum over the query heads
 * sharing a kv head. Fully masked rows contribute nothing.
 */
export function softmaxAttentionReferenceBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dO: Tensor,
  options: AttentionOptions = {},
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const p = resolveAttentionProblem(q, k, v, options);
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const G = readF64(dO, 'dO', p.oShape);
  const dQ = new Float64Array(Q.length);
  const dK = new Float64Array(K.length);
  const dV = new Float64Array(V.length);
  const o = new Float64Array(p.dv);
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.hq; h++) {
      const kvh = Math.floor(h / p.group);
      const kb = kBase(p, b, kvh, p.d);
      const vb = kBase(p, b, kvh, p.dv);
      for (let i = 0; i < p.seqQ[b]!; i++) {
        const { keys, probs } = softmaxRow(p, Q, K, b, h, i);
        if (keys.length === 0) continue;
        const qo = qBase(p, b, h, p.d) + i * p.qRow;
        const go = qBase(p, b, h, p.dv) + i * p.oRow;
        o.fill(0);
        for (let t = 0; t < keys.length; t++) {
          const vo = vb + keyRow(p, b, keys[t]!) * p.vRow;
          for (let c = 0; c < p.dv; c++) o[c] = o[c]! + probs[t]! * V[vo + c]!;
        }
        let Di = 0;
        for (let c = 0; c < p.dv; c++) Di += G[go + c]! * o[c]!;
        for (let t = 0; t < keys.length; t++) {
          const ko = kb + keyRow(p, b, keys[t]!) * p.kRow;
          const vo = vb + keyRow(p, b, keys[t]!) * p.vRow;
          const P = probs[t]!;
          let dP = 0;
          for (let c = 0; c < p.dv; c++) {
            dP += G[go + c]! * V[vo + c]!;
            dV[vo + c] = dV[vo + c]! + P * G[go + c]!;
          }
          const dS = P * (dP - Di) * p.scale;
          for (let c = 0; c < p.d; c++) {
            dQ[qo + c] = dQ[qo + c]! + dS * K[ko + c]!;
            dK[ko + c] = dK[ko + c]! + dS * Q[qo + c]!;
          }
        }
      }
    }
  }
  return { dq: f64(dQ, q.shape), dk: f64(dK, k.shape), dv: f64(dV, v.shape) };
}
