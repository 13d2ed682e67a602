// Gated linear attention (GLA; KERNELS.md "Gated linear attention", the TS twin in
// packages/linear-attention/src/gla: chunk.ts, chunk-math.ts): the pieces shared by the chunk
// forward (gla_forward.h) and backward (gla_backward.h) of one ISA.
//
// One pool task is one (sequence, head) pair: it walks that sequence's chunks of C tokens in
// order (the state passes from chunk to chunk). A chunk is gathered from BTHK into contiguous
// rows whose widths are padded to multiples of 16 with zeros (Kp, Vp), so every product below
// has a column count that is a whole number of 16-float panels and needs no column tail.
// Chunk-local cumulative gates G are summed in double: a strongly negative gate (-20 per step)
// drives G to -1280 inside a chunk of 64, where f32's spacing (1e-4) would spoil the relative
// gates G_t - G_s; their differences are exact enough in double and only then rounded to f32.
// Every exponent taken is <= 0 (the secondary-level chunking of chunk-math.ts), so nothing
// overflows; the smallest factors underflow to 0, where the true value is smaller still.
#pragma once

#include "common_impl.h"

namespace attnkit {
namespace ATTNKIT_NS {

// glaSubChunkSize (packages/linear-attention/src/gla/plan.ts) for the chunk sizes the native
// kernels take (16..256): the secondary-level sub-chunks are 16 rows.
constexpr int64_t kGlaSub = 16;
constexpr float kGlaLog2e = 1.4426950408889634f;

// Columns per register block of glaMatMul: 64 floats on AVX-512 (4 x 4 accumulators of 32
// registers), 16 on AVX2 (4 x 2 of 16), 16 scalars; every column count is a multiple of 16, so
// a tail block has a whole number of vectors.
constexpr int kGlaNV = V::L >= 16 ? 4 : V::L == 8 ? 2 : 16;
constexpr int64_t kGlaCB = kGlaNV * V::L;

// c[r][.] (+)= alpha * sum_{p in [p0, p1(r block))} a[r][p] b[p][.] for MR rows, NV vectors.
template <int MR, int NV>
ATTNKIT_ALWAYS_INLINE void glaMicro(int64_t p0, int64_t p1, const float* a, int64_t lda,
                                    const float* b, int64_t ldb, float* c, int64_t ldc, float alpha,
                                    bool acc) {
  V s[MR][NV];
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < NV; v++) s[r][v] = V::zero();
  for (int64_t p = p0; p < p1; p++) {
    V bv[NV];
    for (int v = 0; v < NV; v++) bv[v] = V::load(b + p * ldb + v * V::L);
    for (int r = 0; r < MR; r++) {
      const V av = V::set1(a[r * lda + p]);
      for (int v = 0; v < NV; v++) s[r][v] = V::fma(av, bv[v], s[r][v]);
    }
  }
  const V al = V::set1(alpha);
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < NV; v++) {
      float* out = c + r * ldc + v * V::L;
      V x = al * s[r][v];
      if (acc) x = x + V::load(out);
      x.store(out);
    }
}

template <int MR>
ATTNKIT_ALWAYS_INLINE void glaMicroCols(int nv, int64_t p0, int64_t p1, const float* a,
                                        int64_t lda, const float* b, int64_t ldb, float* c,
                                        int64_t ldc, float alpha, bool acc) {
  if constexpr (kGlaNV == 16) {
    glaMicro<MR, 16>(p0, p1, a, lda, b, ldb, c, ldc, alpha, acc);
  } else {
    switch (kGlaNV == 2 ? 2 : nv) {
      case 4:
        glaMicro<MR, 4>(p0, p1, a, lda, b, ldb, c, ldc, alpha, acc);
        break;
      case 3:
        glaMicro<MR, 3>(p0, p1, a, lda, b, ldb, c, ldc, alpha, acc);
        break;
      case 2:
        glaMicro<MR, 2>(p0, p1, a, lda, b, ldb, c, ldc, alpha, acc);
        break;
      default:
        glaMicro<MR, 1>(p0, p1, a, lda, b, ldb, c, ldc, alpha, acc);
        break;
    }
  }
}

// Which inner indices a row sums over: all, p <= row ('lower'; a's entries above its diagonal
// must be 0 inside a row block) or p >= row ('upper'; a's entries below the diagonal 0).
enum class GlaTri { kFull, kLower, kUpper };

// c (m x n) = alpha a (m x k) b (k x n) (+ c with acc), row-major, n a multiple of 16. The
// chunk products: scores, A v, q S, k^T v and the backward's; a few dozen rows each, so a
// register-blocked loop over unpacked rows (no packing: every operand sits in L1).
inline void glaMatMul(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                      int64_t ldb, float* c, int64_t ldc, float alpha, bool acc,
                      GlaTri tri = GlaTri::kFull) {
  constexpr int64_t MR = 4;
  for (int64_t i = 0; i < m; i += MR) {
    const int64_t mr = imin(MR, m - i);
    const int64_t p0 = tri == GlaTri::kUpper ? imin(i, k) : 0;
    const int64_t p1 = tri == GlaTri::kLower ? imin(k, i + mr) : k;
    for (int64_t j = 0; j < n; j += kGlaCB) {
      const int nv = static_cast<int>(imin(kGlaCB, n - j) / V::L);
      const float* ai = a + i * lda;
      const float* bj = b + j;
      float* cij = c + i * ldc + j;
      switch (mr) {
        case 4:
          glaMicroCols<4>(nv, p0, p1, ai, lda, bj, ldb, cij, ldc, alpha, acc);
          break;
        case 3:
          glaMicroCols<3>(nv, p0, p1, ai, lda, bj, ldb, cij, ldc, alpha, acc);
          break;
        case 2:
          glaMicroCols<2>(nv, p0, p1, ai, lda, bj, ldb, cij, ldc, alpha, acc);
          break;
        default:
          glaMicroCols<1>(nv, p0, p1, ai, lda, bj, ldb, cij, ldc, alpha, acc);
          break;
      }
    }
  }
}

// out[x] = alpha src[x] e^{G[x] - R[x]} for x < kp (a multiple of 16), G - R <= 0 (R = null:
// e^{G[x]}). The difference is taken in double and rounded once; exp2v keeps about 1 ulp plus
// the rounding of the exponent (below 1e-6 relative down to e^-20).
inline void glaGateRow(const float* src, const double* G, const double* R, float alpha,
                       int64_t kp, float* out, float* tmp) {
  if (R != nullptr)
    for (int64_t x = 0; x < kp; x++) tmp[x] = static_cast<float>(G[x] - R[x]);
  else
    for (int64_t x = 0; x < kp; x++) tmp[x] = static_cast<float>(G[x]);
  const V l2e = V::set1(kGlaLog2e);
  const V al = V::set1(alpha);
  for (int64_t x = 0; x < kp; x += V::L) {
    const V e = exp2v(V::load(tmp + x) * l2e, 0.0f);
    (al * V::load(src + x) * e).store(out + x);
  }
}

// As glaGateRow with the exponent R[x] - G[x] (a key row gated towards a later reference row).
inline void glaGateRowBack(const float* src, const double* G, const double* R, float alpha,
                           int64_t kp, float* out, float* tmp) {
  for (int64_t x = 0; x < kp; x++) tmp[x] = static_cast<float>(R[x] - G[x]);
  const V l2e = V::set1(kGlaLog2e);
  const V al = V::set1(alpha);
  for (int64_t x = 0; x < kp; x += V::L) {
    const V e = exp2v(V::load(tmp + x) * l2e, 0.0f);
    (al * V::load(src + x) * e).store(out + x);
  }
}

// e^{x} for x <= 0 in place, kp a multiple of 16.
inline void glaExpRow(float* x, int64_t kp) {
  const V l2e = V::set1(kGlaLog2e);
  for (int64_t i = 0; i < kp; i += V::L) exp2v(V::load(x + i) * l2e, 0.0f).store(x + i);
}

// Rows t < L of a BTHK array (first row at `src`, rows `stride` floats apart) into dst
// (L x wp, zero-padded beyond `width`).
inline void glaGather(const float* src, int64_t stride, int64_t L, int64_t width, int64_t wp,
                      float* dst) {
  for (int64_t t = 0; t < L; t++) {
    const float* s = src + t * stride;
    float* d = dst + t * wp;
    int64_t x = 0;
    for (; x < width; x++) d[x] = s[x];
    for (; x < wp; x++) d[x] = 0.0f;
  }
}

// Asks for rows t < L of a BTHK array (`width` floats each, `stride` apart) ahead of use: a
// task walks its (sequence, head) rows H K floats apart, a stride the hardware prefetchers do
// not follow across pages, so without this the chunk gathers wait on memory (measured: most of
// the forward's time at T 32768).
inline void glaPrefetchRows(const float* src, int64_t stride, int64_t L, int64_t width) {
  for (int64_t t = 0; t < L; t++) {
    const char* row = reinterpret_cast<const char*>(src + t * stride);
    for (int64_t b = 0; b < width * 4; b += 64) __builtin_prefetch(row + b, 0, 3);
  }
}

inline void glaScatter(const float* src, int64_t L, int64_t width, int64_t wp, float* dst,
                       int64_t stride) {
  for (int64_t t = 0; t < L; t++) {
    const float* s = src + t * wp;
    float* d = dst + t * stride;
    for (int64_t x = 0; x < width; x++) d[x] = s[x];
  }
}

// out (cols x rows, row stride ldo) = in^T for in (rows x cols, row stride ldi).
inline void glaTranspose(const float* in, int64_t ldi, int64_t rows, int64_t cols, float* out,
                         int64_t ldo) {
  for (int64_t i = 0; i < rows; i++)
    for (int64_t j = 0; j < cols; j++) out[j * ldo + i] = in[i * ldi + j];
}

// Sequence n of the problem: rows [bos, eos) of batch row `batch`.
struct GlaSeq {
  int64_t batch, bos, eos;
};

inline GlaSeq glaSeq(const GlaDims& z, int64_t n) {
  if (z.cuSeqlens != nullptr) return {0, z.cuSeqlens[n], z.cuSeqlens[n + 1]};
  return {n, 0, z.t};
}

inline int64_t glaPad(int64_t x) { return roundUp(x, 16); }

// One chunk's gathered rows and gate factors (forward and backward share it).
struct GlaChunk {
  int64_t C, K, V, Kp, Vp;
  float* q = nullptr;    // C x Kp
  float* k = nullptr;    // C x Kp
  float* g = nullptr;    // C x Kp: gk, then e^{gk} (the per-step decays)
  double* G = nullptr;   // C x Kp: chunk-local cumulative gates
  float* v = nullptr;    // C x Vp
  float* tmp = nullptr;  // Kp

  static int64_t floats(int64_t C, int64_t Kp, int64_t Vp) {
    return 3 * C * Kp + 2 * C * Kp + C * Vp + Kp;
  }
  void bind(float* p) {
    q = p;
    k = q + C * Kp;
    g = k + C * Kp;
    G = reinterpret_cast<double*>(g + C * Kp);  // 64-byte aligned: C Kp is a multiple of 16
    v = reinterpret_cast<float*>(G + C * Kp);
    tmp = v + C * Vp;
  }

  // Prefetches chunk rows [t0, t0 + L) of (batch, h) (q when not null; dO too when not null).
  void prefetch(const GlaDims& z, const float* Q, const float* Kk, const float* Vv,
                const float* Gk, const float* dO, int64_t batch, int64_t h, int64_t t0,
                int64_t L) const {
    const int64_t row = (batch * z.t + t0) * z.h + h;
    if (Q != nullptr) glaPrefetchRows(Q + row * K, z.h * K, L, K);
    glaPrefetchRows(Kk + row * K, z.h * K, L, K);
    glaPrefetchRows(Gk + row * K, z.h * K, L, K);
    glaPrefetchRows(Vv + row * V, z.h * V, L, V);
    if (dO != nullptr) glaPrefetchRows(dO + row * V, z.h * V, L, V);
  }

  // Gathers chunk rows [t0, t0 + L) of (batch, h) and forms G and the decays.
  void load(const GlaDims& z, const float* Q, const float* Kk, const float* Vv, const float* Gk,
            int64_t batch, int64_t h, int64_t t0, int64_t L) {
    const int64_t row = (batch * z.t + t0) * z.h + h;
    if (Q != nullptr) glaGather(Q + row * K, z.h * K, L, K, Kp, q);
    glaGather(Kk + row * K, z.h * K, L, K, Kp, k);
    glaGather(Gk + row * K, z.h * K, L, K, Kp, g);
    glaGather(Vv + row * V, z.h * V, L, V, Vp, v);
    for (int64_t x = 0; x < Kp; x++) G[x] = g[x];
    for (int64_t t = 1; t < L; t++) {
      const double* prev = G + (t - 1) * Kp;
      double* cur = G + t * Kp;
      const float* gt = g + t * Kp;
      for (int64_t x = 0; x < Kp; x++) cur[x] = prev[x] + gt[x];
    }
    for (int64_t t = 0; t < L; t++) glaExpRow(g + t * Kp, Kp);
  }
};

}  // namespace ATTNKIT_NS
}  // namespace attnkit
