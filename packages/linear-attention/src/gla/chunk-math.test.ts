import { Rng } from '@attnkit/tensor';
import { relL2 } from '@attnkit/testing';
import { describe, expect, test } from 'vitest';
import {
  chunkLocalCumsum,
  intraChunkGradK,
  intraChunkGradQ,
  intraChunkScores,
  intraScratch,
  suffixSum,
} from './chunk-math.js';
import { mat, mulRows, mulRowsT, type Triangle, transpose } from './gemm.js';

const rng = new Rng(0x61a2);

const normals = (n: number) => rng.randn([n], 'f64').toFloat64Array();

/** Gates in log space: log sigmoid of normals, or with `strong` -20 per step in half the channels. */
function gates(L: number, K: number, strong: boolean): Float64Array {
  const z = normals(L * K);
  return z.map((x, i) => (strong && i % 2 === 0 ? -20 : -Math.log1p(Math.exp(-x))));
}

/** The direct formulas, exp(G_t - G_s) per element (exact in float64 for s <= t). */
function direct(q: Float64Array, k: Float64Array, G: Float64Array, K: number) {
  const rel = (t: number, s: number, x: number) => Math.exp(G[t * K + x]! - G[s * K + x]!);
  const A = (t: number, s: number) => {
    let a = 0;
    for (let x = 0; x < K; x++) a += q[t * K + x]! * k[s * K + x]! * rel(t, s, x);
    return a;
  };
  return { rel, A };
}

describe('chunkLocalCumsum and suffixSum', () => {
  test('prefix and suffix sums along the chunk, per channel', () => {
    const [L, K] = [7, 3];
    const g = normals(L * K);
    const G = new Float64Array(L * K).fill(Number.NaN);
    chunkLocalCumsum(g, L, K, G);
    const s = g.slice();
    suffixSum(s, L, K);
    for (let t = 0; t < L; t++) {
      for (let x = 0; x < K; x++) {
        let pre = 0;
        let suf = 0;
        for (let u = 0; u <= t; u++) pre += g[u * K + x]!;
        for (let u = t; u < L; u++) suf += g[u * K + x]!;
        expect(G[t * K + x]).toBeCloseTo(pre, 13);
        expect(s[t * K + x]).toBeCloseTo(suf, 13);
      }
    }
  });
});

describe('secondary-level chunking equals the direct relative-gate formulas', () => {
  // L not a multiple of the sub-chunk, sub-chunks of 1 row up to the whole chunk.
  const cases = [
    [13, 5, 4, false],
    [13, 5, 1, false],
    [64, 8, 16, false],
    [37, 6, 16, true],
    [37, 6, 64, false],
    [20, 3, 8, true],
  ] as const;
  test.each(cases)('L %i, K %i, sub-chunks of %i, strong gates %s', (L, K, sub, strong) => {
    const q = normals(L * K);
    const k = normals(L * K);
    const g = gates(L, K, strong);
    const dec = g.map(Math.exp);
    const G = new Float64Array(L * K);
    chunkLocalCumsum(g, L, K, G);
    const { rel, A: a } = direct(q, k, G, K);
    const lda = L + 3;
    const scratch = intraScratch(L, K);
    const A = new Float64Array(L * lda).fill(Number.NaN);
    intraChunkScores(q, k, G, dec, L, K, sub, 0.7, A, lda, scratch);
    const want: number[] = [];
    const got: number[] = [];
    for (let t = 0; t < L; t++) {
      for (let s = 0; s < lda; s++) {
        if (s <= t) {
          want.push(0.7 * a(t, s));
          got.push(A[t * lda + s]!);
        } else expect(Number.isNaN(A[t * lda + s]), 'upper triangle untouched').toBe(true);
      }
    }
    expect(got.every(Number.isFinite)).toBe(true);
    expect(relL2(got, want)).toBeLessThan(1e-13);

    // Gradients of sum_{s<=t} dA_ts A_ts through q and k, strictly causal part (s < t).
    const dA = new Float64Array(L * lda);
    for (let i = 0; i < dA.length; i++) dA[i] = rng.uniform() - 0.5;
    const dAT = new Float64Array(L * lda);
    transpose(mat(dA, 0, lda), L, L, mat(dAT, 0, lda));
    const dq = new Float64Array(L * K).fill(Number.NaN);
    const dk = new Float64Array(L * K).fill(Number.NaN);
    intraChunkGradQ(dA, lda, k, G, dec, L, K, sub, dq, scratch);
    intraChunkGradK(dAT, lda, q, G, dec, L, K, sub, dk, scratch);
    const wantQ = new Float64Array(L * K);
    const wantK = new Float64Array(L * K);
    for (let t = 0; t < L; t++) {
      for (let s = 0; s < t; s++) {
        for (let x = 0; x < K; x++) {
          const w = dA[t * lda + s]! * rel(t, s, x);
          wantQ[t * K + x] = wantQ[t * K + x]! + w * k[s * K + x]!;
          wantK[s * K + x] = wantK[s * K + x]! + w * q[t * K + x]!;
        }
      }
    }
    expect(dq.every(Number.isFinite) && dk.every(Number.isFinite)).toBe(true);
    expect(relL2(dq, wantQ)).toBeLessThan(1e-13);
    expect(relL2(dk, wantK)).toBeLessThan(1e-13);
    if (strong) {
      // The first-level factorisation (q e^{G}) . (k e^{-G}) would overflow f32 here (and f64
      // at L 37): the test exercises what the secondary level is for.
      const worst = Math.max(...G.map((x) => Math.exp(-x)));
      expect(worst).toBeGreaterThan(3.5e38);
      if (L >= 37) expect(worst).toBe(Number.POSITIVE_INFINITY);
    }
  });
});

describe('gemm helpers equal the triple loop', () => {
  const naive = (
    X: Float64Array,
    ldx: number,
    M: Float64Array,
    ldm: number,
    rows: number,
    inner: number,
    cols: number,
    tri: Triangle,
  ) => {
    const out = new Float64Array(rows * cols);
    for (let i = 0; i < rows; i++) {
      for (let j = 0; j < inner; j++) {
        if ((tri === 'lower' && j > i) || (tri === 'upper' && j < i)) continue;
        for (let c = 0; c < cols; c++) out[i * cols + c] += X[i * ldx + j]! * M[j * ldm + c]!;
      }
    }
    return out;
  };
  test.each([
    [5, 7, 9, 'full'],
    [6, 6, 4, 'lower'],
    [7, 7, 5, 'upper'],
    [9, 4, 3, 'upper'],
    [4, 9, 6, 'lower'],
    [1, 3, 2, 'full'],
  ] as const)('mulRows %i x %i x %i (%s), accumulating and not', (rows, inner, cols, tri) => {
    const [ldx, ldm, ldo, at] = [inner + 2, cols + 1, cols + 3, 5];
    const X = normals(at + rows * ldx);
    const M = normals(at + inner * ldm);
    const want = naive(X.subarray(at), ldx, M.subarray(at), ldm, rows, inner, cols, tri);
    const out = new Float64Array(at + rows * ldo).fill(Number.NaN);
    mulRows(mat(X, at, ldx), mat(M, at, ldm), mat(out, at, ldo), rows, inner, cols, false, tri);
    const got = Array.from(
      { length: rows * cols },
      (_, n) => out[at + Math.floor(n / cols) * ldo + (n % cols)]!,
    );
    expect(relL2(got, want)).toBeLessThan(1e-14);
    mulRows(mat(X, at, ldx), mat(M, at, ldm), mat(out, at, ldo), rows, inner, cols, true, tri);
    const twice = Array.from(
      { length: rows * cols },
      (_, n) => out[at + Math.floor(n / cols) * ldo + (n % cols)]!,
    );
    expect(
      relL2(
        twice,
        want.map((x) => 2 * x),
      ),
    ).toBeLessThan(1e-14);
    // Columns past `cols` are never written.
    if (ldo > cols) expect(Number.isNaN(out[at + cols])).toBe(true);
  });

  test('mulRowsT: X Y^T, full and lower, scaled; transpose', () => {
    const [rows, cols, inner] = [7, 5, 6];
    const X = normals(rows * inner);
    const Y = normals(cols * inner);
    for (const lower of [false, true]) {
      const out = new Float64Array(rows * cols).fill(Number.NaN);
      mulRowsT(
        mat(X, 0, inner),
        mat(Y, 0, inner),
        mat(out, 0, cols),
        rows,
        cols,
        inner,
        0.5,
        lower,
      );
      for (let i = 0; i < rows; i++) {
        for (let j = 0; j < cols; j++) {
          if (lower && j > i) {
            expect(Number.isNaN(out[i * cols + j])).toBe(true);
            continue;
          }
          let s = 0;
          for (let c = 0; c < inner; c++) s += X[i * inner + c]! * Y[j * inner + c]!;
          expect(out[i * cols + j]).toBeCloseTo(0.5 * s, 13);
        }
      }
    }
    const T = new Float64Array(inner * rows);
    transpose(mat(X, 0, inner), rows, inner, mat(T, 0, rows));
    expect(T[3 * rows + 2]).toBe(X[2 * inner + 3]);
  });
});
