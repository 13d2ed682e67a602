import {
  DTypeError,
  formatShape,
  isFloatDType,
  ShapeError,
  type Tensor,
  ValueError,
} from '@attnkit/tensor';
import { checkOptions, checkRank, checkScalar, f64, fail, readF64, sigmoid } from './util.js';

/**
 * Float64 HSTU pointwise attention (KERNELS.md "HSTU pointwise attention", as in
 * generative-recommenders): per sequence of the jagged batch,
 * A = silu(alpha Q K^T + rab) / maxSeqLen masked to j <= i (diagonal included), Y = A V.
 * There is no softmax: the fixed 1/maxSeqLen keeps the scale of Y independent of the length.
 */
export interface HstuOptions {
  /** int32 offsets of length B+1 into the L (token) axis; first 0, last L. */
  seqOffsets: Int32Array | readonly number[];
  /** N of the normalisation; every sequence must be at most this long. */
  maxSeqLen: number;
  alpha: number;
  /** Default true: j <= i. false: every j of the sequence. */
  causal?: boolean;
  /** Additive bias [B or 1, H or 1, maxSeqLen, maxSeqLen] indexed by positions within the sequence. */
  rab?: Tensor;
}

interface HstuProblem {
  batch: number;
  h: number;
  d: number;
  dv: number;
  offsets: Int32Array;
  n: number;
  alpha: number;
  causal: boolean;
  /** rab strides for batch and head (0 when broadcast). */
  rabB: number;
  rabH: number;
}

function resolve(q: Tensor, k: Tensor, v: Tensor, options: HstuOptions): HstuProblem {
  checkOptions(options);
  const [L, H, D] = checkRank(q, 'q', 3, '[L, H, D]');
  const ks = checkRank(k, 'k', 3, '[L, H, D]');
  const vs = checkRank(v, 'v', 3, '[L, H, Dv]');
  for (const [t, name] of [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
  ] as const) {
    if (!isFloatDType(t.dtype))
      fail(DTypeError, name, 'a float dtype (f32, f64, f16, bf16)', t.dtype);
  }
  if (ks[0] !== L || ks[1] !== H || ks[2] !== D) {
    fail(ShapeError, 'k', `shape [${L}, ${H}, ${D}] (as q)`, `shape ${formatShape(ks)}`);
  }
  if (vs[0] !== L || vs[1] !== H)
    fail(ShapeError, 'v', `shape [${L}, ${H}, Dv]`, `shape ${formatShape(vs)}`);
  const n = options.maxSeqLen;
  if (!Number.isInteger(n) || n < 1) fail(ValueError, 'maxSeqLen', 'a positive integer', n);
  const alpha = checkScalar(options.alpha, 'alpha');
  const causal = options.causal ?? true;
  if (typeof causal !== 'boolean') fail(ValueError, 'causal', 'a boolean', causal);
  const so = options.seqOffsets;
  if (!(so instanceof Int32Array) && !Array.isArray(so))
    fail(ValueError, 'seqOffsets', 'an Int32Array or number[]', so);
  if (so.length < 2) fail(ValueError, 'seqOffsets', 'at least 2 entries (B+1 with B >= 1)', so);
  const offsets = Int32Array.from(so);
  if (!Array.from(so).every((x) => Number.isInteger(x)))
    fail(ValueError, 'seqOffsets', 'integer entries', so);
  if (offsets[0] !== 0) fail(ValueError, 'seqOffsets', 'first entry 0', so);
  for (let b = 1; b < offsets.length; b++) {
    const len = offsets[b]! - offsets[b - 1]!;
    if (len < 0)
      fail(
        ValueError,
        'seqOffsets',
        `non-decreasing offsets (entry ${b} is ${offsets[b]} < ${offsets[b - 1]})`,
        so,
      );
    if (len > n)
      fail(
        ValueError,
        'seqOffsets',
        `sequence lengths <= maxSeqLen ${n} (sequence ${b - 1} has ${len})`,
        so,
      );
  }
  if (offsets[offsets.length - 1] !== L) {
    fail(
      ValueError,
      'seqOffsets',
      `last entry equal to the token count L = ${L}`,
      offsets[offsets.length - 1],
    );
  }
  const batch = offsets.length - 1;
  let rabB = 0;
  let rabH = 0;
  if (options.rab !== undefined) {
    const rs = checkRank(options.rab, 'rab', 4, '[B or 1, H or 1, maxSeqLen, maxSeqLen]');
    if (
      (rs[0] !== batch && rs[0] !== 1) ||
      (rs[1] !== H && rs[1] !== 1) ||
      rs[2] !== n ||
      rs[3] !== n
    ) {
      fail(
        ShapeError,
        'rab',
        `shape [${batch} or 1, ${H} or 1, ${n}, ${n}]`,
        `shape ${formatShape(rs)}`,
      );
    }
    rabH = rs[1] === 1 ? 0 : n * n;
    rabB = rs[0] === 1 ? 0 : rs[1]! * n * n;
  }
  return { batch, h: H, d: D, dv: vs[2]!, offsets, n, alpha, causal, rabB, rabH };
}

/** Calls f(i, j) for the token pairs (global indices) of head h's attention in sequence b. */
function pairs(
  p: HstuProblem,
  b: number,
  f: (i: number, j: number, li: number, lj: number) => void,
): void {
  const start = p.offsets[b]!;
  const len = p.offsets[b + 1]! - start;
  for (let li = 0; li < len; li++) {
    const end = p.causal ? li + 1 : len;
    for (let lj = 0; lj < end; lj++) f(start + li, start + lj, li, lj);
  }
}

/** z = alpha q_i . k_j + rab at head h. */
function logit(
  p: HstuProblem,
  Q: Float64Array,
  K: Float64Array,
  R: Float64Array | undefined,
  b: number,
  h: number,
  i: number,
  j: number,
  li: number,
  lj: number,
): number {
  const qo = (i * p.h + h) * p.d;
  const ko = (j * p.h + h) * p.d;
  let s = 0;
  for (let c = 0; c < p.d; c++) s += Q[qo + c]! * K[ko + c]!;
  const bias = R ? R[b * p.rabB + h * p.rabH + li * p.n + lj]! : 0;
  return p.alpha * s + bias;
}

export function hstuAttentionReference(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  options: HstuOptions,
): { o: Tensor } {
  const p = resolve(q, k, v, options);
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const R = options.rab ? readF64(options.rab, 'rab') : undefined;
  const O = new Float64Array(q.shape[0]! * p.h * p.dv);
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.h; h++) {
      pairs(p, b, (i, j, li, lj) => {
        const z = logit(p, Q, K, R, b, h, i, j, li, lj);
        const a = (z * sigmoid(z)) / p.n;
        const oo = (i * p.h + h) * p.dv;
        const vo = (j * p.h + h) * p.dv;
        for (let c = 0; c < p.dv; c++) O[oo + c] = O[oo + c]! + a * V[vo + c]!;
      });
    }
  }
  return { o: f64(O, [q.shape[0]!, p.h, p.dv]) };
}

/**
 * dV_j = sum_i A_ij dO_i; dZ_ij = (dO_i . v_j) silu'(z_ij) / N with
 * silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z))); dQ_i = alpha sum_j dZ_ij k_j,
 * dK_j = alpha sum_i dZ_ij q_i, d rab = dZ summed over the dimensions rab broadcasts.
 */
export function hstuAttentionReferenceBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  dO: Tensor,
  options: HstuOptions,
): { dq: Tensor; dk: Tensor; dv: Tensor; drab?: Tensor } {
  const p = resolve(q, k, v, options);
  const Q = readF64(q, 'q');
  const K = readF64(k, 'k');
  const V = readF64(v, 'v');
  const G = readF64(dO, 'dO', [q.shape[0]!, p.h, p.dv]);
  const R = options.rab ? readF64(options.rab, 'rab') : undefined;
  const dQ = new Float64Array(Q.length);
  const dK = new Float64Array(K.length);
  const dV = new Float64Array(V.length);
  const dR = R ? new Float64Array(R.length) : undefined;
  for (let b = 0; b < p.batch; b++) {
    for (let h = 0; h < p.h; h++) {
      pairs(p, b, (i, j, li, lj) => {
        const z = logit(p, Q, K, R, b, h, i, j, li, lj);
        const s = sigmoid(z);
        const qo = (i * p.h + h) * p.d;
        const ko = (j * p.h + h) * p.d;
        const go = (i * p.h + h) * p.dv;
        const vo = (j * p.h + h) * p.dv;
        const a = (z * s) / p.n;
        let dA = 0;
        for (let c = 0; c < p.dv; c++) {
          dA += G[go + c]! * V[vo + c]!;
          dV[vo + c] = dV[vo + c]! + a * G[go + c]!;
        }
        // (1 - s) as sigmoid(-z): no cancellation when s -> 1.
        const dZ = (dA * s * (1 + z * sigmoid(-z))) / p.n;
        for (let c = 0; c < p.d; c++) {
          dQ[qo + c] = dQ[qo + c]! + p.alpha * dZ * K[ko + c]!;
          dK[ko + c] = dK[ko + c]! + p.alpha * dZ * Q[qo + c]!;
        }
        if (dR) {
          const ro = b * p.rabB + h * p.rabH + li * p.n + lj;
          dR[ro] = dR[ro]! + dZ;
        }
      });
    }
  }
  const out: { dq: Tensor; dk: Tensor; dv: Tensor; drab?: Tensor } = {
    dq: f64(dQ, q.shape),
    dk: f64(dK, k.shape),
    dv: f64(dV, v.shape),
  };
  if (dR && options.rab) out.drab = f64(dR, options.rab.shape);
  return out;
}
