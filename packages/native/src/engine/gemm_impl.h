// f32 GEMM in the BLIS structure (Van Zee & van de Geijn, 2015): op(B) packed into KC x NR
// micro-panels (kept in L1 across the rows of an A block), op(A) packed into MR x KC
// micro-panels (an MC x KC block kept in L2), an MR x NR register-blocked micro-kernel.
// Parameters per ISA: kGemmMR, kGemmNV (NR = kGemmNV * V::L), kGemmKC, kGemmMC, kGemmNC.
#pragma once

#include "common_impl.h"

namespace attnkit {
namespace ATTNKIT_NS {

constexpr int kGemmNR = kGemmNV * V::L;

// C[mr x nr] = alpha * (A panel x B panel) + beta * C, for the valid mr <= MR, nr <= NR.
inline void gemmMicro(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc,
                      float alpha, float beta, int64_t mr, int64_t nr) {
  V acc[kGemmMR][kGemmNV];
  for (int r = 0; r < kGemmMR; r++)
    for (int v = 0; v < kGemmNV; v++) acc[r][v] = V::zero();
  for (int64_t k = 0; k < kc; k++) {
    V b[kGemmNV];
    for (int v = 0; v < kGemmNV; v++) b[v] = V::load(pb + v * V::L);
    for (int r = 0; r < kGemmMR; r++) {
      V a = V::set1(pa[r]);
      for (int v = 0; v < kGemmNV; v++) acc[r][v] = V::fma(a, b[v], acc[r][v]);
    }
    pa += kGemmMR;
    pb += kGemmNR;
  }
  const V va = V::set1(alpha);
  const V vb = V::set1(beta);
  if (mr == kGemmMR && nr == kGemmNR) {
    for (int r = 0; r < kGemmMR; r++) {
      float* row = c + r * ldc;
      for (int v = 0; v < kGemmNV; v++) {
        V out = va * acc[r][v];
        // beta = 0 must not read C: it may hold NaN (BLAS semantics).
        if (beta != 0.0f) out = V::fma(vb, V::load(row + v * V::L), out);
        out.store(row + v * V::L);
      }
    }
    return;
  }
  alignas(64) float tile[kGemmMR * kGemmNR];
  for (int r = 0; r < kGemmMR; r++)
    for (int v = 0; v < kGemmNV; v++) acc[r][v].store(tile + r * kGemmNR + v * V::L);
  for (int64_t r = 0; r < mr; r++) {
    float* row = c + r * ldc;
    for (int64_t j = 0; j < nr; j++) {
      float out = alpha * tile[r * kGemmNR + j];
      row[j] = beta != 0.0f ? out + beta * row[j] : out;
    }
  }
}

// Packs op(A)[i0 : i0 + mc, p0 : p0 + kc] into MR-row micro-panels, zero-padded.
inline void packA(const GemmArgs& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  for (int64_t ip = 0; ip < mc; ip += kGemmMR) {
    const int64_t rows = imin(kGemmMR, mc - ip);
    float* panel = dst + ip * kc;
    if (g.transA) {
      // op(A)(i, p) = A[p * lda + i]: rows of a panel are contiguous.
      for (int64_t p = 0; p < kc; p++) {
        const float* src = g.a + (p0 + p) * g.lda + i0 + ip;
        float* out = panel + p * kGemmMR;
        int64_t r = 0;
        for (; r < rows; r++) out[r] = src[r];
        for (; r < kGemmMR; r++) out[r] = 0.0f;
      }
    } else {
      for (int64_t r = 0; r < kGemmMR; r++) {
        if (r < rows) {
          const float* src = g.a + (i0 + ip + r) * g.lda + p0;
          for (int64_t p = 0; p < kc; p++) panel[p * kGemmMR + r] = src[p];
        } else {
          for (int64_t p = 0; p < kc; p++) panel[p * kGemmMR + r] = 0.0f;
        }
      }
    }
  }
}

// Packs NR-column micro-panel `jp` of op(B)[p0 : p0 + kc, j0 : j0 + nc], zero-padded.
inline void packBPanel(const GemmArgs& g, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                       int64_t jp, float* dst) {
  const int64_t cols = imin(kGemmNR, nc - jp);
  float* panel = dst + jp * kc;
  if (!g.transB) {
    for (int64_t p = 0; p < kc; p++) {
      const float* src = g.b + (p0 + p) * g.ldb + j0 + jp;
      float* out = panel + p * kGemmNR;
      if (cols == kGemmNR) {
        for (int v = 0; v < kGemmNV; v++) V::load(src + v * V::L).store(out + v * V::L);
      } else {
        int64_t j = 0;
        for (; j < cols; j++) out[j] = src[j];
        for (; j < kGemmNR; j++) out[j] = 0.0f;
      }
    }
  } else {
    // op(B)(p, j) = B[j * ldb + p].
    for (int64_t j = 0; j < kGemmNR; j++) {
      if (j < cols) {
        const float* src = g.b + (j0 + jp + j) * g.ldb + p0;
        for (int64_t p = 0; p < kc; p++) panel[p * kGemmNR + j] = src[p];
      } else {
        for (int64_t p = 0; p < kc; p++) panel[p * kGemmNR + j] = 0.0f;
      }
    }
  }
}

inline void scaleC(const GemmArgs& g) {
  for (int64_t i = 0; i < g.m; i++) {
    float* row = g.c + i * g.ldc;
    for (int64_t j = 0; j < g.n; j++) row[j] = g.beta == 0.0f ? 0.0f : g.beta * row[j];
  }
}

inline const char* gemm(const GemmArgs& g) {
  if (g.m == 0 || g.n == 0) return nullptr;
  if (g.k == 0 || g.alpha == 0.0f) {
    scaleC(g);
    return nullptr;
  }
  const int threads = poolThreads();
  // Row blocks: a multiple of the thread count so that both cores get equal work.
  int64_t nbI = ceilDiv(g.m, kGemmMC);
  if (g.m >= static_cast<int64_t>(threads) * kGemmMR) nbI = roundUp(nbI, threads);
  const int64_t mc = roundUp(ceilDiv(g.m, nbI), kGemmMR);
  nbI = ceilDiv(g.m, mc);
  const int64_t kcMax = imin(kGemmKC, g.k);
  const int64_t ncMax = imin(kGemmNC, roundUp(g.n, kGemmNR));

  Floats bufB(kcMax * ncMax);
  Floats bufA(static_cast<int64_t>(threads) * mc * kcMax);
  if (!bufB.ok() || !bufA.ok()) return kOutOfMemory;

  for (int64_t j0 = 0; j0 < g.n; j0 += ncMax) {
    const int64_t nc = imin(ncMax, g.n - j0);
    const int64_t panels = ceilDiv(nc, kGemmNR);
    // Few row blocks (a short, wide C): split the columns too, so every thread has work.
    const int64_t nbJ = imin(panels, imax(1, ceilDiv(2 * threads, nbI)));
    const int64_t panelsPerJ = ceilDiv(panels, nbJ);
    for (int64_t p0 = 0; p0 < g.k; p0 += kcMax) {
      const int64_t kc = imin(kcMax, g.k - p0);
      const float beta = p0 == 0 ? g.beta : 1.0f;
      auto pack = [&](int64_t jp, int) { packBPanel(g, j0, nc, p0, kc, jp * kGemmNR, bufB.get()); };
      parallel(panels, pack);
      auto compute = [&](int64_t task, int thread) {
        const int64_t bi = task / nbJ;
        const int64_t bj = task % nbJ;
        const int64_t i0 = bi * mc;
        const int64_t rows = imin(mc, g.m - i0);
        float* pa = bufA.get() + static_cast<int64_t>(thread) * mc * kcMax;
        packA(g, i0, rows, p0, kc, pa);
        const int64_t jpEnd = imin(panels, (bj + 1) * panelsPerJ);
        for (int64_t jp = bj * panelsPerJ; jp < jpEnd; jp++) {
          const int64_t jj = jp * kGemmNR;
          const int64_t cols = imin(kGemmNR, nc - jj);
          const float* pb = bufB.get() + jj * kc;
          for (int64_t ip = 0; ip < rows; ip += kGemmMR) {
            gemmMicro(kc, pa + ip * kc, pb, g.c + (i0 + ip) * g.ldc + j0 + jj, g.ldc, g.alpha,
                      beta, imin(kGemmMR, rows - ip), cols);
          }
        }
      };
      parallel(nbI * nbJ, compute);
    }
  }
  return nullptr;
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
