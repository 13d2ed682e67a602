import { type Tensor, ValueError } from '@attnkit/tensor';
import { type AttentionProblem, kBase, keyRange, qBase, resolveAttentionProblem } from '../spec.js';
import { checkOptions, checkScalar, f64, fail, readF64, sigmoid } from './util.js';

/**
 * Float64 sigmoid attention (FlashSigmoid, KERNELS.md "Sigmoid attention"):
 * O = (sigmoid(scale Q K^T + b) masked) V, with no row normalisation and no LSE. Layout BHND;
 * kv heads may be shared by query heads (GQA) as in softmax attention.
 */
export interface SigmoidAttentionOptions {
  /** Default 1/sqrt(D). */
  scale?: number;
  /** Default -log(Nk), which keeps the row sums of the attention matrix near those of softmax at init. */
  bias?: number;
  /** Bottom-right aligned, as softmax attention. */
  causal?: boolean;
  /** [left, right], -1 = unbounded, as softmax attention. */
  window?: readonly [number, number];
}

interface Resolved {
  p: AttentionProblem;
  bias: number;
}

function resolve(q: Tensor, k: Tensor, v: Tensor, options: SigmoidAttentionOptions): Resolved {
  checkOptions(options);
  const extra = options as { layout?: unknown; blockSparse?: unknown };
  if (extra.layout !== undefined && extra.layout !== 'BHND') {
    fail(ValueError, 'layout', '"BHND" (sigmoid attention has no packed layout)', extra.layout);
  }
  const p = resolveAttentionProblem(q, k, v, {
    scale: options.scale,
    causal: options.causal,
    window: options.window,
  });
  const nk = p.maxSeqK;
  const bias =
    options.bias === undefined ? (nk > 0 ? -Math.log(nk) : 0) : checkScalar(options.bias, 'bias');
  return { p, bias };
}

/** Logits scale q_i . k_j + b for the allowed keys [lo, hi) of row i. */
function sigmoidRow(
  p: AttentionProblem,
  bias: number,
  Q: Float64Array,
  K: Float64Array,
  b: number,
  h: number,
  i: number,
): { lo: number; logits: Float64Array } {
  const [lo, hi] = keyRange(p, i, p.seqQ[b]!, p.seqK[b]!);
  const logits = new Float64Array(Math.max(0, hi - lo));
  const qo = qBase(p, b, h, p.d) + i * p.qRow;
  const kb = kBase(p, b, Math.floor(h / p.group), p.d);
  for (let j = lo; j < hi; j++) {
    const ko = kb + j * p.kRow;
    let s = 0;
    for (let c = 0; c < p.d; c++) s += Q[qo + c]! * K[ko + c]!;
    logits[j - lo] = p.scale * s + bias;
  }
  return { lo, logits };
}

export function sigmoidAttentionReference(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: SigmoidAttentionOptions = {},
): { o: Tensor } {
  const { p, bias } = resolve(q, k, v, options);
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const O = new Float64Array(p.oShape.reduce((a, x) => a * x, 1));
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.hq; h++) {
      const vb = kBase(p, b, Math.floor(h / p.group), p.dv);
      for (let i = 0; i < p.seqQ[b]!; i++) {
        const { lo, logits } = sigmoidRow(p, bias, Q, K, b, h, i);
        const oo = qBase(p, b, h, p.dv) + i * p.oRow;
        for (let t = 0; t < logits.length; t++) {
          const vo = vb + (lo + t) * p.vRow;
          const P = sigmoid(logits[t]!);
          for (let c = 0; c < p.dv; c++) O[oo + c] = O[oo + c]! + P * V[vo + c]!;
        }
      }
    }
  }
  return { o: f64(O, p.oShape) };
}

/**
 * With P = sigmoid(S): dV_j = sum_i P_ij dO_i, dS_ij = (dO_i . v_j) P_ij (1 - P_ij),
 * dQ_i = scale sum_j dS_ij k_j, dK_j = scale sum_i dS_ij q_i (summed over shared kv heads).
 */
export function sigmoidAttentionReferenceBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dO: Tensor,
  options: SigmoidAttentionOptions = {},
): { dq: Tensor; dk: Tensor; dv: Tensor } {
  const { p, bias } = resolve(q, k, v, options);
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const G = readF64(dO, 'dO', p.oShape);
  const dQ = new Float64Array(Q.length);
  const dK = new Float64Array(K.length);
  const dV = new Float64Array(V.length);
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.hq; h++) {
      const kvh = Math.floor(h / p.group);
      const kb = kBase(p, b, kvh, p.d);
      const vb = kBase(p, b, kvh, p.dv);
      for (let i = 0; i < p.seqQ[b]!; i++) {
        const { lo, logits } = sigmoidRow(p, bias, Q, K, b, h, i);
        const qo = qBase(p, b, h, p.d) + i * p.qRow;
        const go = qBase(p, b, h, p.dv) + i * p.oRow;
        for (let t = 0; t < logits.length; t++) {
          const ko = kb + (lo + t) * p.kRow;
          const vo = vb + (lo + t) * p.vRow;
          const P = sigmoid(logits[t]!);
          let dP = 0;
          for (let c = 0; c < p.dv; c++) {
            dP += G[go + c]! * V[vo + c]!;
            dV[vo + c] = dV[vo + c]! + P * G[go + c]!;
          }
          // sigmoid' = P (1 - P) = sigmoid(s) sigmoid(-s); the latter keeps full relative precision when P -> 1.
          const dS = dP * P * sigmoid(-logits[t]!) * p.scale;
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
