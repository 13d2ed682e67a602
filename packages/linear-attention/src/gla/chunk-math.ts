import { mat, mulRows, mulRowsT } from './gemm.js';

/**
 * The intra-chunk algebra of GLA's chunkwise form (Yang et al. 2024, sections 4.2-4.3) on one
 * chunk of L tokens held contiguously (row t of q, k, G at t*K), independent of how the chunk was
 * gathered. Pure functions over Float64Arrays, unit-tested against the direct formulas.
 *
 * G is the chunk-local cumulative sum of the log-space gates (G_t = sum_{u<=t} gk_u, all <= 0
 * and non-increasing along t). A relative gate exp(G_t - G_s) with s <= t is <= 1, but the
 * first-level factorisation (q_t e^{G_t}) . (k_s e^{-G_s}) overflows as soon as G reaches
 * about -88 (f32) or -709 (f64): 64 steps of gk = -20 reach -1280. The secondary level splits
 * the chunk into sub-chunks of `sub` rows and, for a query sub-chunk i and any earlier key row
 * s, factors through a reference row r between them:
 *     exp(G_t - G_s) = exp(G_t - G_r) * exp(G_r - G_s),   t >= r >= s,
 * both factors <= 1 (so they can only underflow, where the true product is smaller still).
 * Pairs inside one sub-chunk take the relative gate as the running product of the per-step
 * decays dec_u = e^{gk_u} for s < u <= t (also <= 1; `sub` K exps per block instead of
 * sub^2 K / 2).
 */

/** Buffers the helpers below work in: three of at least L*K elements. */
export interface IntraScratch {
  a: Float64Array;
  b: Float64Array;
  c: Float64Array;
}

export function intraScratch(chunkSize: number, K: number): IntraScratch {
  const n = chunkSize * K;
  return { a: new Float64Array(n), b: new Float64Array(n), c: new Float64Array(n) };
}

/** G[t*K + x] = sum_{u <= t} g[u*K + x] for t < L: the chunk-local log-space cumulative gates. */
export function chunkLocalCumsum(
  g: ArrayLike<number>,
  L: number,
  K: number,
  G: Float64Array,
): void {
  for (let x = 0; x < K; x++) G[x] = g[x]!;
  for (let t = 1; t < L; t++) {
    const o = t * K;
    for (let x = 0; x < K; x++) G[o + x] = G[o - K + x]! + g[o + x]!;
  }
}

/** out[t*K + x] = x_tx * exp(G_tx - G_rx) for t in [from, to) (r a row index). */
function gateRows(
  x: Float64Array,
  G: Float64Array,
  r: number,
  from: number,
  to: number,
  K: number,
  sign: 1 | -1,
  out: Float64Array,
): void {
  const ro = r * K;
  for (let t = from; t < to; t++) {
    const o = t * K;
    for (let c = 0; c < K; c++) out[o + c] = x[o + c]! * Math.exp(sign * (G[o + c]! - G[ro + c]!));
  }
}

/**
 * The causal intra-chunk scores A[t*lda + s] = scale * sum_x q_tx k_sx exp(G_tx - G_sx) for
 * s <= t < L (the upper triangle is not written). Off-diagonal sub-chunk blocks are products of
 * q_t e^{G_t - G_r} and k_s e^{G_r - G_s} with r the query sub-chunk's first row.
 */
export function intraChunkScores(
  q: Float64Array,
  k: Float64Array,
  G: Float64Array,
  dec: Float64Array,
  L: number,
  K: number,
  sub: number,
  scale: number,
  A: Float64Array,
  lda: number,
  scratch: IntraScratch,
): void {
  const { a: qh, b: kh, c: kd } = scratch;
  for (let a = 0; a < L; a += sub) {
    const e = Math.min(L, a + sub);
    if (a > 0) {
      gateRows(q, G, a, a, e, K, 1, qh);
      gateRows(k, G, a, 0, a, K, -1, kh);
      mulRowsT(mat(qh, a * K, K), mat(kh, 0, K), mat(A, a * lda, lda), e - a, a, K, scale);
    }
    // kd[s] = k_s * exp(G_t - G_s) for the current row t (decayed one step per row).
    for (let t = a; t < e; t++) {
      const o = t * K;
      for (let s = a; s < t; s++) {
        const p = s * K;
        for (let x = 0; x < K; x++) kd[p + x] = kd[p + x]! * dec[o + x]!;
      }
      for (let x = 0; x < K; x++) kd[o + x] = k[o + x]!;
      for (let s = a; s <= t; s++) {
        const p = s * K;
        let acc = 0;
        for (let x = 0; x < K; x++) acc += q[o + x]! * kd[p + x]!;
        A[t * lda + s] = scale * acc;
      }
    }
  }
}

/**
 * dq[t*K + x] = sum_{s < t} dA[t*lda + s] k_sx exp(G_tx - G_sx) for t < L: the strictly causal
 * intra-chunk part of dq (the diagonal s = t, whose relative gate is 1, is left to the caller).
 */
export function intraChunkGradQ(
  dA: Float64Array,
  lda: number,
  k: Float64Array,
  G: Float64Array,
  dec: Float64Array,
  L: number,
  K: number,
  sub: number,
  dq: Float64Array,
  scratch: IntraScratch,
): void {
  const { b: kh, c: kd } = scratch;
  dq.fill(0, 0, L * K);
  for (let a = 0; a < L; a += sub) {
    const e = Math.min(L, a + sub);
    const r = a * K;
    if (a > 0) {
      gateRows(k, G, a, 0, a, K, -1, kh);
      mulRows(mat(dA, a * lda, lda), mat(kh, 0, K), mat(dq, a * K, K), e - a, a, K, false);
      for (let t = a; t < e; t++) {
        const o = t * K;
        for (let x = 0; x < K; x++) dq[o + x] = dq[o + x]! * Math.exp(G[o + x]! - G[r + x]!);
      }
    }
    for (let t = a; t < e; t++) {
      const o = t * K;
      for (let s = a; s < t; s++) {
        const p = s * K;
        for (let x = 0; x < K; x++) kd[p + x] = kd[p + x]! * dec[o + x]!;
        const w = dA[t * lda + s]!;
        for (let x = 0; x < K; x++) dq[o + x] = dq[o + x]! + w * kd[p + x]!;
      }
      for (let x = 0; x < K; x++) kd[o + x] = k[o + x]!;
    }
  }
}

/**
 * dk[s*K + x] = sum_{t > s} dA_ts q_tx exp(G_tx - G_sx) for s < L, from the transposed scores
 * gradient dAT[s*lda + t] = dA_ts: the strictly causal intra-chunk part of dk. For a key
 * sub-chunk and later query rows t the reference row r is the sub-chunk's last row.
 */
export function intraChunkGradK(
  dAT: Float64Array,
  lda: number,
  q: Float64Array,
  G: Float64Array,
  dec: Float64Array,
  L: number,
  K: number,
  sub: number,
  dk: Float64Array,
  scratch: IntraScratch,
): void {
  const { a: qh, c: qd } = scratch;
  dk.fill(0, 0, L * K);
  for (let a = 0; a < L; a += sub) {
    const e = Math.min(L, a + sub);
    const r = (e - 1) * K;
    if (e < L) {
      gateRows(q, G, e - 1, e, L, K, 1, qh);
      const dATa = mat(dAT, a * lda + e, lda);
      mulRows(dATa, mat(qh, e * K, K), mat(dk, a * K, K), e - a, L - e, K, false);
      for (let s = a; s < e; s++) {
        const p = s * K;
        for (let x = 0; x < K; x++) dk[p + x] = dk[p + x]! * Math.exp(G[r + x]! - G[p + x]!);
      }
    }
    // qd[t] = q_t * exp(G_t - G_s) for the current row s, t in (s, e); s runs backwards and each
    // step down multiplies by dec_{s+1} = exp(G_{s+1} - G_s).
    for (let s = e - 1; s >= a; s--) {
      const p = s * K;
      for (let t = s + 1; t < e; t++) {
        const o = t * K;
        const w = dAT[s * lda + t]!;
        for (let x = 0; x < K; x++) dk[p + x] = dk[p + x]! + w * qd[o + x]!;
      }
      if (s === a) break;
      for (let t = s + 1; t < e; t++) {
        const o = t * K;
        for (let x = 0; x < K; x++) qd[o + x] = qd[o + x]! * dec[p + x]!;
      }
      for (let x = 0; x < K; x++) qd[p + x] = q[p + x]! * dec[p + x]!;
    }
  }
}

/** In place: x[t*K + c] <- sum_{u >= t} x[u*K + c] for t < L (suffix sums along the chunk). */
export function suffixSum(x: Float64Array, L: number, K: number): void {
  for (let t = L - 2; t >= 0; t--) {
    const o = t * K;
    for (let c = 0; c < K; c++) x[o + c] = x[o + c]! + x[o + K + c]!;
  }
}
