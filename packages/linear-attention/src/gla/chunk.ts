import {
  type Arr,
  type GlaBackwardIo,
  type GlaDims,
  type GlaForwardIo,
  loadState,
  storeState,
} from './arrays.js';
import {
  chunkLocalCumsum,
  intraChunkGradK,
  intraChunkGradQ,
  intraChunkScores,
  intraScratch,
  suffixSum,
} from './chunk-math.js';
import { mat, mulRows, mulRowsT, transpose } from './gemm.js';
import { glaChunks, glaSubChunkSize } from './plan.js';

/**
 * GLA's chunkwise-parallel form (Yang et al. 2024, section 4) on the TS backend. Per sequence
 * and head, for each chunk of L <= C tokens with local cumulative gates G (chunk-math.ts) and the
 * state S before the chunk:
 *
 *   o_t     = sum_{s<=t} A_ts v_s + scale (q_t * e^{G_t}) S                  (intra + inter)
 *   S_next  = diag(e^{G_L}) S + sum_s (k_s * e^{G_L - G_s})^T v_s             (state passing)
 *
 * with A the causal intra-chunk scores of the secondary-level chunking. Every exponent is <= 0.
 * Work arrays are float64; inputs are decoded from f32/f16/bf16 (or f64) by the caller.
 */

class ChunkBuffers {
  readonly q: Float64Array;
  readonly k: Float64Array;
  readonly g: Float64Array;
  readonly G: Float64Array;
  /** e^{G_t} and e^{G_L - G_t} per row: the inter-chunk gate factors, all <= 1. */
  readonly eG: Float64Array;
  readonly eL: Float64Array;
  /** e^{gk_t}: the per-step decays (the diagonal sub-chunk blocks' relative gates). */
  readonly dec: Float64Array;
  readonly v: Float64Array;
  readonly A: Float64Array;
  /** L x K and K x L work matrices (gated q or k, transposed). */
  readonly lk: Float64Array;
  readonly kl: Float64Array;
  readonly scratch;
  constructor(
    readonly C: number,
    K: number,
    V: number,
  ) {
    this.q = new Float64Array(C * K);
    this.k = new Float64Array(C * K);
    this.g = new Float64Array(C * K);
    this.G = new Float64Array(C * K);
    this.eG = new Float64Array(C * K);
    this.eL = new Float64Array(C * K);
    this.dec = new Float64Array(C * K);
    this.v = new Float64Array(C * V);
    this.A = new Float64Array(C * C);
    this.lk = new Float64Array(C * K);
    this.kl = new Float64Array(K * C);
    this.scratch = intraScratch(C, K);
  }
}

/** Rows t < L of a BTHK array from element offset `at`, `stride` elements apart, into dst (L x width). */
function gather(src: Arr, at: number, stride: number, L: number, width: number, dst: Float64Array) {
  for (let t = 0; t < L; t++) {
    const o = at + t * stride;
    const d = t * width;
    for (let x = 0; x < width; x++) dst[d + x] = src[o + x]!;
  }
}

function scatter(
  src: Float64Array,
  L: number,
  width: number,
  dst: Arr,
  at: number,
  stride: number,
) {
  for (let t = 0; t < L; t++) {
    const o = at + t * stride;
    const d = t * width;
    for (let x = 0; x < width; x++) dst[o + x] = src[d + x]!;
  }
}

/** Loads chunk [t0, t0 + L) of (batch, h): k, gk, v (and q), G and the inter-chunk gate factors. */
function loadChunk(
  d: GlaDims,
  io: { q?: Arr; k: Arr; v: Arr; gk: Arr },
  batch: number,
  h: number,
  t0: number,
  L: number,
  b: ChunkBuffers,
): void {
  const { T, H, K, V } = d;
  const row = (batch * T + t0) * H + h;
  if (io.q) gather(io.q, row * K, H * K, L, K, b.q);
  gather(io.k, row * K, H * K, L, K, b.k);
  gather(io.gk, row * K, H * K, L, K, b.g);
  gather(io.v, row * V, H * V, L, V, b.v);
  chunkLocalCumsum(b.g, L, K, b.G);
  for (let i = 0; i < L * K; i++) b.eG[i] = Math.exp(b.G[i]!);
  // e^{G_L - G_t} = e^{G_L - G_{t+1}} e^{gk_{t+1}}: products of factors <= 1, exact to a few ulp.
  const last = (L - 1) * K;
  for (let x = 0; x < K; x++) {
    b.dec[x] = Math.exp(b.g[x]!);
    b.eL[last + x] = 1;
  }
  for (let t = 1; t < L; t++)
    for (let x = 0; x < K; x++) b.dec[t * K + x] = Math.exp(b.g[t * K + x]!);
  for (let t = L - 2; t >= 0; t--)
    for (let x = 0; x < K; x++) b.eL[t * K + x] = b.eL[(t + 1) * K + x]! * b.dec[(t + 1) * K + x]!;
}

/** out (K x L, row stride C) = (x * f)^T for the L x K matrices x and f: a gated q or k, transposed. */
function gatedTranspose(
  x: Float64Array,
  f: Float64Array,
  alpha: number,
  L: number,
  K: number,
  C: number,
  out: Float64Array,
) {
  for (let t = 0; t < L; t++)
    for (let c = 0; c < K; c++) out[c * C + t] = alpha * x[t * K + c]! * f[t * K + c]!;
}

/** Rows of the K x V matrix S times e^{G_L} (the chunk's total decay per key channel). */
function decayRows(S: Float64Array, L: number, K: number, V: number, b: ChunkBuffers): void {
  const last = (L - 1) * K;
  for (let x = 0; x < K; x++) {
    const e = b.eG[last + x]!;
    const r = x * V;
    for (let y = 0; y < V; y++) S[r + y] = S[r + y]! * e;
  }
}

/** S <- diag(e^{G_L}) S + sum_s (k_s * e^{G_L - G_s})^T v_s. */
function passState(S: Float64Array, L: number, K: number, V: number, b: ChunkBuffers): void {
  decayRows(S, L, K, V, b);
  gatedTranspose(b.k, b.eL, 1, L, K, b.C, b.kl);
  mulRows(mat(b.kl, 0, b.C), mat(b.v, 0, V), mat(S, 0, V), K, L, V, true);
}

export function chunkGlaForwardArrays(d: GlaDims, io: GlaForwardIo, chunkSize: number): void {
  const { T, H, K, V, scale } = d;
  const C = chunkSize;
  const sub = glaSubChunkSize(C);
  const b = new ChunkBuffers(C, K, V);
  const S = new Float64Array(K * V);
  const o = new Float64Array(C * V);
  for (const seq of d.seqs) {
    for (let h = 0; h < H; h++) {
      loadState(io.h0, seq.index * H + h, d, S);
      for (const [cs, ce] of glaChunks(seq.eos - seq.bos, C)) {
        const L = ce - cs;
        const t0 = seq.bos + cs;
        loadChunk(d, io, seq.batch, h, t0, L, b);
        intraChunkScores(b.q, b.k, b.G, b.dec, L, K, sub, scale, b.A, C, b.scratch);
        // o = A v (causal) + (scale q * e^{G}) S
        mulRows(mat(b.A, 0, C), mat(b.v, 0, V), mat(o, 0, V), L, L, V, false, 'lower');
        for (let i = 0; i < L * K; i++) b.lk[i] = scale * b.q[i]! * b.eG[i]!;
        mulRows(mat(b.lk, 0, K), mat(S, 0, V), mat(o, 0, V), L, K, V, true);
        scatter(o, L, V, io.o, ((seq.batch * T + t0) * H + h) * V, H * V);
        passState(S, L, K, V, b);
      }
      storeState(io.ht, seq.index * H + h, d, S);
    }
  }
}

/**
 * Gradients of the chunkwise form. The chunk states are recomputed first (one K x V state per
 * chunk), then the chunks are visited last to first with dS, the gradient of the state after
 * the chunk (dht at the end):
 *
 *   dA_ts = scale dO_t . v_s (s <= t);  dv_s = sum_{t>=s} A_ts dO_t + (k_s * e^{G_L - G_s}) dS
 *   dq_t  = sum_{s<=t} dA_ts k_s e^{G_t - G_s} + scale e^{G_t} * (S dO_t)
 *   dk_s  = sum_{t>=s} dA_ts q_t e^{G_t - G_s} + e^{G_L - G_s} * (dS v_s)
 *   dS    <- diag(e^{G_L}) dS + scale sum_t (q_t * e^{G_t})^T dO_t            (for the chunk before)
 *
 * dgk: gk_u moves every G_t with t >= u in its chunk, so dgk_u is the suffix sum of dG_t. The
 * textbook dG_t = q_t dq_t - k_t dk_t (+ the state terms) cancels catastrophically when the gates
 * are strongly negative: its diagonal pairs (s = t, relative gate 1) are O(1) while the true dgk
 * is O(e^{gk}). Here the diagonal pairs are left out (they enter dq_t and dk_t with the same
 * product q_t k_t dA_tt, so they cancel exactly), and the state terms, which telescope to
 *   sum_y dS * (e^{G_L} S + sum_{s<u} e^{G_L - G_s} k_s^T v_s)   (the state before u, decayed to L),
 * are summed as that prefix instead of as a difference. What is left cancels only between terms
 * that carry the same small relative gates.
 */
export function chunkGlaBackwardArrays(d: GlaDims, io: GlaBackwardIo, chunkSize: number): void {
  const { T, H, K, V, scale } = d;
  const C = chunkSize;
  const KV = K * V;
  const sub = glaSubChunkSize(C);
  const b = new ChunkBuffers(C, K, V);
  const dO = new Float64Array(C * V);
  const AT = new Float64Array(C * C);
  const dA = new Float64Array(C * C);
  const dAT = new Float64Array(C * C);
  const dq = new Float64Array(C * K);
  const dk = new Float64Array(C * K);
  const dG = new Float64Array(C * K);
  const sdo = new Float64Array(C * K);
  const w = new Float64Array(C * K);
  const dv = new Float64Array(C * V);
  const prefix = new Float64Array(K);
  const S = new Float64Array(KV);
  const dS = new Float64Array(KV);
  for (const seq of d.seqs) {
    const chunks = glaChunks(seq.eos - seq.bos, C);
    const states = new Float64Array(chunks.length * KV);
    for (let h = 0; h < H; h++) {
      const block = seq.index * H + h;
      loadState(io.h0, block, d, S);
      for (const [c, [cs, ce]] of chunks.entries()) {
        states.set(S, c * KV);
        loadChunk(d, { k: io.k, v: io.v, gk: io.gk }, seq.batch, h, seq.bos + cs, ce - cs, b);
        passState(S, ce - cs, K, V, b);
      }
      loadState(io.dht, block, d, dS);
      for (let c = chunks.length - 1; c >= 0; c--) {
        const [cs, ce] = chunks[c]!;
        const L = ce - cs;
        const t0 = seq.bos + cs;
        const Sn = states.subarray(c * KV, (c + 1) * KV);
        loadChunk(d, io, seq.batch, h, t0, L, b);
        const rowV = ((seq.batch * T + t0) * H + h) * V;
        const rowK = ((seq.batch * T + t0) * H + h) * K;
        gather(io.dO, rowV, H * V, L, V, dO);
        intraChunkScores(b.q, b.k, b.G, b.dec, L, K, sub, scale, b.A, C, b.scratch);
        mulRowsT(mat(dO, 0, V), mat(b.v, 0, V), mat(dA, 0, C), L, L, V, scale, true);
        transpose(mat(b.A, 0, C), L, L, mat(AT, 0, C));
        transpose(mat(dA, 0, C), L, L, mat(dAT, 0, C));
        // dv = A^T dO (t >= s) + (k * e^{G_L - G}) dS
        mulRows(mat(AT, 0, C), mat(dO, 0, V), mat(dv, 0, V), L, L, V, false, 'upper');
        for (let i = 0; i < L * K; i++) b.lk[i] = b.k[i]! * b.eL[i]!;
        mulRows(mat(b.lk, 0, K), mat(dS, 0, V), mat(dv, 0, V), L, K, V, true);
        intraChunkGradQ(dA, C, b.k, b.G, b.dec, L, K, sub, dq, b.scratch);
        intraChunkGradK(dAT, C, b.q, b.G, b.dec, L, K, sub, dk, b.scratch);
        // S dO_t and dS v_s for every row at once.
        mulRowsT(mat(dO, 0, V), mat(Sn, 0, V), mat(sdo, 0, K), L, K, V, 1);
        mulRowsT(mat(b.v, 0, V), mat(dS, 0, V), mat(w, 0, K), L, K, V, 1);
        for (let t = 0; t < L; t++) {
          const dAtt = dA[t * C + t]!;
          for (let x = 0; x < K; x++) {
            const i = t * K + x;
            const inter = scale * b.eG[i]! * sdo[i]!;
            dG[i] = b.q[i]! * (dq[i]! + inter) - b.k[i]! * dk[i]!;
            dq[i] = dq[i]! + inter + dAtt * b.k[i]!;
          }
        }
        suffixSum(dG, L, K);
        const last = (L - 1) * K;
        for (let x = 0; x < K; x++) {
          let c0 = 0;
          const r = x * V;
          for (let y = 0; y < V; y++) c0 += dS[r + y]! * Sn[r + y]!;
          prefix[x] = b.eG[last + x]! * c0;
        }
        for (let s = 0; s < L; s++) {
          const dAss = dA[s * C + s]!;
          for (let x = 0; x < K; x++) {
            const i = s * K + x;
            const fw = b.eL[i]! * w[i]!;
            dG[i] = dG[i]! + prefix[x]!;
            prefix[x] = prefix[x]! + b.k[i]! * fw;
            dk[i] = dk[i]! + fw + dAss * b.q[i]!;
          }
        }
        // dS for the chunk before: diag(e^{G_L}) dS + (scale q * e^{G})^T dO.
        decayRows(dS, L, K, V, b);
        gatedTranspose(b.q, b.eG, scale, L, K, C, b.kl);
        mulRows(mat(b.kl, 0, C), mat(dO, 0, V), mat(dS, 0, V), K, L, V, true);
        scatter(dq, L, K, io.dq, rowK, H * K);
        scatter(dk, L, K, io.dk, rowK, H * K);
        scatter(dG, L, K, io.dgk, rowK, H * K);
        scatter(dv, L, V, io.dv, rowV, H * V);
      }
      storeState(io.dh0, block, d, dS);
    }
  }
}
