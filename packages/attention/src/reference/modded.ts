import type { Tensor } from '@attnkit/tensor';
import { ValueError } from '@attnkit/tensor';
import {
  applyScoreMod,
  type ModSite,
  type ResolvedScoreMod,
  resolveScoreMods,
  type ScoreMod,
  scoreModGrad,
} from '../mods.js';
import { type PermuteOptions, permKBase, permQBase, resolvePermute } from '../permute.js';
import {
  type AttentionOptions,
  type AttentionProblem,
  kBase,
  lseBase,
  qBase,
  resolveAttentionProblem,
} from '../spec.js';
import { rowKeys } from './softmax.js';
import { checkScalar, f64, fail, readF64, sigmoid } from './util.js';

/**
 * Float64 reference of the skeleton's whole hook space: softmax (with optional attention
 * sinks) or sigmoid normalisation, score mods in order, and the mask rule of spec.ts (causal,
 * window, block-sparse, mask mod), in both layouts. Every backend's modded kernels are checked
 * against this; without mods it equals softmaxAttentionReference / sigmoidAttentionReference.
 */
export interface ModdedReferenceOptions extends AttentionOptions {
  normalize?: 'softmax' | 'sigmoid';
  scoreMod?: ScoreMod | readonly ScoreMod[];
  /**
   * Softmax only: one logit per query head (length Hq) that joins every row's normalisation
   * with a zero value vector (attention sinks, as gpt-oss): LSE_i = log(sum_j e^S_ij + e^sink).
   */
  sinks?: Float32Array | readonly number[];
  /** Sigmoid only: b in sigmoid(S + b); default -log(Nk) of each sequence. */
  bias?: number;
  /** Rows tiled in a permuted order (see permute.ts): attention of the gathered rows, scattered back. */
  permute?: PermuteOptions;
}

interface Resolved {
  p: AttentionProblem;
  mods: ResolvedScoreMod[];
  biasData: (Float64Array | undefined)[];
  sigmoid: boolean;
  sinks: Float64Array | undefined;
  sigBias: (b: number) => number;
  /** Sequence position of the query row tiled i-th of (b, h), and of key j of (b, kv head). */
  qPos: (b: number, h: number, i: number) => number;
  kPos: (b: number, kh: number, j: number) => number;
}

function resolve(q: Tensor, k: Tensor, v: Tensor, options: ModdedReferenceOptions): Resolved {
  const p = resolveAttentionProblem(q, k, v, options);
  const mods = resolveScoreMods(options.scoreMod, p, q.device);
  const biasData = mods.map((m) => (m.kind === 'bias' ? m.bias.toFloat64Array() : undefined));
  const norm = options.normalize ?? 'softmax';
  if (norm !== 'softmax' && norm !== 'sigmoid')
    fail(ValueError, 'normalize', '"softmax" or "sigmoid"', norm);
  let sinks: Float64Array | undefined;
  if (options.sinks !== undefined) {
    if (norm !== 'softmax') fail(ValueError, 'sinks', 'no sinks with sigmoid', 'sinks');
    sinks = Float64Array.from(options.sinks as ArrayLike<number>);
    if (sinks.length !== p.hq) fail(ValueError, 'sinks', `length Hq = ${p.hq}`, sinks.length);
  }
  const fixed = options.bias === undefined ? undefined : checkScalar(options.bias, 'bias');
  const perm = resolvePermute(options.permute, p);
  const pq = perm?.q;
  const pk = perm?.k;
  return {
    qPos: pq ? (b, h, i) => pq[permQBase(p, b, h) + i]! : (_b, _h, i) => i,
    kPos: pk ? (b, kh, j) => pk[permKBase(p, b, kh) + j]! : (_b, _kh, j) => j,
    p,
    mods,
    biasData,
    sigmoid: norm === 'sigmoid',
    sinks,
    sigBias: (b) => fixed ?? (p.seqK[b]! > 0 ? -Math.log(p.seqK[b]!) : 0),
  };
}

interface Row {
  keys: number[];
  /** Scores before the mods (scale * q . k) and after them. */
  raw: Float64Array;
  s: Float64Array;
  /** Weights: softmax probabilities, or sigmoid(s + b). */
  w: Float64Array;
  lse: number;
}

function scoreRow(
  r: Resolved,
  Q: Float64Array,
  K: Float64Array,
  b: number,
  h: number,
  i: number,
): Row {
  const { p } = r;
  const keys = rowKeys(p, b, h, i);
  const n = keys.length;
  const raw = new Float64Array(n);
  const s = new Float64Array(n);
  const w = new Float64Array(n);
  const kh = Math.floor(h / p.group);
  const qo = qBase(p, b, h, p.d) + r.qPos(b, h, i) * p.qRow;
  const kb = kBase(p, b, kh, p.d);
  const site: ModSite = { b, h, i, j: 0, nq: p.seqQ[b]!, nk: p.seqK[b]! };
  for (let t = 0; t < n; t++) {
    const ko = kb + r.kPos(b, kh, keys[t]!) * p.kRow;
    let dot = 0;
    for (let c = 0; c < p.d; c++) dot += Q[qo + c]! * K[ko + c]!;
    raw[t] = dot * p.scale;
    site.j = keys[t]!;
    let x = raw[t]!;
    r.mods.forEach((m, n2) => {
      x = applyScoreMod(m, x, site, r.biasData[n2]);
    });
    s[t] = x;
  }
  if (r.sigmoid) {
    const bias = r.sigBias(b);
    for (let t = 0; t < n; t++) w[t] = sigmoid(s[t]! + bias);
    return { keys, raw, s, w, lse: Number.NaN };
  }
  const sink = r.sinks?.[h];
  let m = sink ?? Number.NEGATIVE_INFINITY;
  for (let t = 0; t < n; t++) if (s[t]! > m || Number.isNaN(s[t])) m = Math.max(m, s[t]!);
  // A NaN score poisons the row, as softmaxAttentionReference does (Math.max keeps NaN); only a
  // row without an allowed key (or whose scores are all -Infinity) gives O = 0, LSE = -Infinity.
  if (m === Number.NEGATIVE_INFINITY) return { keys, raw, s, w, lse: m };
  let l = sink === undefined ? 0 : Math.exp(sink - m);
  for (let t = 0; t < n; t++) {
    w[t] = Math.exp(s[t]! - m);
    l += w[t]!;
  }
  for (let t = 0; t < n; t++) w[t] = w[t]! / l;
  return { keys, raw, s, w, lse: m + Math.log(l) };
}

/** O (and LSE for softmax) of the modded problem; rows without keys: O = 0, LSE = -inf (or the sink). */
export function moddedAttentionReference(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: ModdedReferenceOptions = {},
): { o: Tensor; lse?: Tensor } {
  const r = resolve(q, k, v, options);
  const { p } = r;
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const O = new Float64Array(p.oShape.reduce((a, x) => a * x, 1));
  const L = new Float64Array(p.lseShape.reduce((a, x) => a * x, 1));
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.hq; h++) {
      const kh = Math.floor(h / p.group);
      const vb = kBase(p, b, kh, p.dv);
      for (let i = 0; i < p.seqQ[b]!; i++) {
        const row = scoreRow(r, Q, K, b, h, i);
        const at = r.qPos(b, h, i);
        const oo = qBase(p, b, h, p.dv) + at * p.oRow;
        row.keys.forEach((j, t) => {
          const vo = vb + r.kPos(b, kh, j) * p.vRow;
          for (let c = 0; c < p.dv; c++) O[oo + c] = O[oo + c]! + row.w[t]! * V[vo + c]!;
        });
        L[lseBase(p, b, h) + at] = row.lse;
      }
    }
  }
  const o = f64(O, p.oShape);
  return r.sigmoid ? { o } : { o, lse: f64(L, p.lseShape) };
}

/**
 * Gradients of the modded problem for upstream dO: dq, dk, dv (dk, dv summed over the query
 * heads of a group) and, with sinks, dsinks [Hq] (d/d sink_h = -sum_i P_sink,i D_i).
 */
export function moddedAttentionReferenceBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dO: Tensor,
  options: ModdedReferenceOptions = {},
): { dq: Tensor; dk: Tensor; dv: Tensor; dsinks?: Tensor } {
  const r = resolve(q, k, v, options);
  const { p } = r;
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const dOut = readF64(dO, 'dO', p.oShape);
  const dQ = new Float64Array(Q.length);
  const dK = new Float64Array(K.length);
  const dV = new Float64Array(V.length);
  const dSinks = new Float64Array(p.hq);
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.hq; h++) {
      const kh = Math.floor(h / p.group);
      const kb = kBase(p, b, kh, p.d);
      const vb = kBase(p, b, kh, p.dv);
      const site: ModSite = { b, h, i: 0, j: 0, nq: p.seqQ[b]!, nk: p.seqK[b]! };
      for (let i = 0; i < p.seqQ[b]!; i++) {
        const row = scoreRow(r, Q, K, b, h, i);
        const at = r.qPos(b, h, i);
        const qo = qBase(p, b, h, p.d) + at * p.qRow;
        const oo = qBase(p, b, h, p.dv) + at * p.oRow;
        const n = row.keys.length;
        // dP_ij = dO_i . v_j
        const dP = new Float64Array(n);
        row.keys.forEach((j, t) => {
          const vo = vb + r.kPos(b, kh, j) * p.vRow;
          let x = 0;
          for (let c = 0; c < p.dv; c++) {
            x += dOut[oo + c]! * V[vo + c]!;
            dV[vo + c] = dV[vo + c]! + row.w[t]! * dOut[oo + c]!;
          }
          dP[t] = x;
        });
        // Softmax: dS = P (dP - D), D = sum_j P_ij dP_ij = dO_i . O_i. Sigmoid: dS = dP w (1 - w).
        let D = 0;
        if (!r.sigmoid) for (let t = 0; t < n; t++) D += row.w[t]! * dP[t]!;
        if (r.sinks && Number.isFinite(row.lse)) dSinks[h] -= Math.exp(r.sinks[h]! - row.lse) * D;
        site.i = i;
        for (let t = 0; t < n; t++) {
          const w = row.w[t]!;
          let ds = r.sigmoid ? dP[t]! * w * (1 - w) : w * (dP[t]! - D);
          // Chain rule through the mods, each at its own input.
          site.j = row.keys[t]!;
          let x = row.raw[t]!;
          let g = 1;
          r.mods.forEach((m, n2) => {
            g *= scoreModGrad(m, x, site);
            x = applyScoreMod(m, x, site, r.biasData[n2]);
          });
          ds *= g * p.scale;
          const ko = kb + r.kPos(b, kh, row.keys[t]!) * p.kRow;
          for (let c = 0; c < p.d; c++) {
            dQ[qo + c] = dQ[qo + c]! + ds * K[ko + c]!;
            dK[ko + c] = dK[ko + c]! + ds * Q[qo + c]!;
          }
        }
      }
    }
  }
  const out: { dq: Tensor; dk: Tensor; dv: Tensor; dsinks?: Tensor } = {
    dq: f64(dQ, q.shape),
    dk: f64(dK, k.shape),
    dv: f64(dV, v.shape),
  };
  if (r.sinks) out.dsinks = f64(dSinks, [p.hq]);
  return out;
}
