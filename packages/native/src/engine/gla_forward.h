// GLA chunk forward (engine.h kOpGlaForward), chunk.ts chunkGlaForwardArrays in f32 with f32
// accumulation. Per sequence and head, for each chunk of L <= C tokens with local cumulative
// gates G and the state S before the chunk:
//   o_t    = sum_{s<=t} A_ts v_s + scale (q_t * e^{G_t}) S
//   S_next = diag(e^{G_L}) S + sum_s (k_s * e^{G_L - G_s})^T v_s
// with A the causal intra-chunk scores of the secondary-level chunking (chunk-math.ts
// intraChunkScores): sub-chunks of 16 rows; a query sub-chunk against the earlier key rows is
// one product of q_t e^{G_t - G_r} and k_s e^{G_r - G_s} (r the sub-chunk's first row, both
// exponents <= 0); inside a sub-chunk the relative gate is the running product of the per-step
// decays, here with the 16 keys of the sub-chunk in the lanes of one (AVX-512) vector.
#pragma once

#include "gla_common.h"

namespace attnkit {
namespace ATTNKIT_NS {

// The diagonal sub-chunk [a, e) of the scores: A[t][s] for a <= s <= t < e, written for all
// 16 columns of the sub-chunk (0 where s > t). kdT (Kp x 16): kd[s] = k_s e^{G_t - G_s} in
// lanes s - a, decayed by one step per row.
inline void glaDiagScores(const GlaChunk& c, int64_t a, int64_t e, float scale, float* A,
                          int64_t lda, float* kdT) {
  constexpr int NL = static_cast<int>(kGlaSub / V::L);
  const int64_t Kp = c.Kp;
  for (int64_t i = 0; i < Kp * kGlaSub; i++) kdT[i] = 0.0f;
  alignas(64) float onehot[kGlaSub];
  for (int64_t t = a; t < e; t++) {
    for (int64_t j = 0; j < kGlaSub; j++) onehot[j] = j == t - a ? 1.0f : 0.0f;
    V one[NL], acc[NL];
    for (int l = 0; l < NL; l++) {
      one[l] = V::load(onehot + l * V::L);
      acc[l] = V::zero();
    }
    const float* qt = c.q + t * Kp;
    const float* kt = c.k + t * Kp;
    const float* dt = c.g + t * Kp;
    for (int64_t x = 0; x < c.K; x++) {
      const V dec = V::set1(dt[x]);
      const V kx = V::set1(kt[x]);
      const V qx = V::set1(qt[x]);
      float* row = kdT + x * kGlaSub;
      for (int l = 0; l < NL; l++) {
        // Lane t - a is 0 before this row, so it becomes exactly k_t; the others decay.
        const V kd = V::fma(one[l], kx, V::load(row + l * V::L) * dec);
        kd.store(row + l * V::L);
        acc[l] = V::fma(qx, kd, acc[l]);
      }
    }
    const V sc = V::set1(scale);
    for (int l = 0; l < NL; l++) (sc * acc[l]).store(A + t * lda + a + l * V::L);
  }
}

// The causal intra-chunk scores A (L x L in a C x C array, zeros above the diagonal up to
// column roundUp(L, 16)). qh (C x Kp) and khT (Kp x C), kdT (Kp x 16) are work arrays.
inline void glaIntraScores(const GlaChunk& c, int64_t L, float scale, float* A, float* qh,
                           float* khT, float* kdT) {
  const int64_t C = c.C, Kp = c.Kp;
  for (int64_t a = 0; a < L; a += kGlaSub) {
    const int64_t e = imin(L, a + kGlaSub);
    if (a > 0) {
      const double* Gr = c.G + a * Kp;
      for (int64_t t = a; t < e; t++)
        glaGateRow(c.q + t * Kp, c.G + t * Kp, Gr, 1.0f, Kp, qh + t * Kp, c.tmp);
      for (int64_t s = 0; s < a; s++) {
        glaGateRowBack(c.k + s * Kp, c.G + s * Kp, Gr, 1.0f, Kp, kdT, c.tmp);
        for (int64_t x = 0; x < Kp; x++) khT[x * C + s] = kdT[x];
      }
      glaMatMul(e - a, a, Kp, qh + a * Kp, Kp, khT, C, A + a * C, C, scale, false);
    }
    glaDiagScores(c, a, e, scale, A, C, kdT);
  }
}

inline int64_t glaForwardFloats(const GlaDims& z) {
  const int64_t C = z.chunk, Kp = glaPad(z.k), Vp = glaPad(z.v);
  // The chunk, A, qh, khT, kdT, klT, o, S.
  return GlaChunk::floats(C, Kp, Vp) + C * C + C * Kp + Kp * C + Kp * kGlaSub + Kp * C + C * Vp +
         Kp * Vp + 64;
}

inline const char* glaForward(const GlaForwardCall& call) {
  const GlaDims& z = call.z;
  const int64_t C = z.chunk, K = z.k, Vd = z.v, Kp = glaPad(K), Vp = glaPad(Vd);
  const int64_t per = roundUp(glaForwardFloats(z), 16);
  const int threads = poolThreads();
  Floats scratch(per * threads);
  if (!scratch.ok()) return kOutOfMemory;
  auto task = [&](int64_t task, int thread) {
    const int64_t n = task / z.h, h = task % z.h;
    const GlaSeq seq = glaSeq(z, n);
    GlaChunk c{C, K, Vd, Kp, Vp};
    float* p = scratch.get() + per * thread;
    c.bind(p);
    p += GlaChunk::floats(C, Kp, Vp);
    float* A = p;
    float* qh = A + C * C;
    float* khT = qh + C * Kp;
    float* kdT = khT + Kp * C;
    float* klT = kdT + Kp * kGlaSub;
    float* o = klT + Kp * C;
    float* S = o + C * Vp;
    const int64_t block = (n * z.h + h) * K * Vd;
    for (int64_t x = 0; x < Kp; x++)
      for (int64_t y = 0; y < Vp; y++)
        S[x * Vp + y] = call.h0 != nullptr && x < K && y < Vd ? call.h0[block + x * Vd + y] : 0.0f;
    for (int64_t cs = seq.bos; cs < seq.eos; cs += C) {
      const int64_t L = imin(C, seq.eos - cs);
      c.load(z, call.q, call.k, call.v, call.gk, seq.batch, h, cs, L);
      if (cs + C < seq.eos)
        c.prefetch(z, call.q, call.k, call.v, call.gk, nullptr, seq.batch, h, cs + C,
                   imin(C, seq.eos - cs - C));
      const int64_t Lp = glaPad(L);
      for (int64_t t = 0; t < L; t++)
        for (int64_t s = 0; s < Lp; s++) A[t * C + s] = 0.0f;
      glaIntraScores(c, L, z.scale, A, qh, khT, kdT);
      // o = A v (causal) + (scale q * e^{G}) S
      glaMatMul(L, Vp, L, A, C, c.v, Vp, o, Vp, 1.0f, false, GlaTri::kLower);
      for (int64_t t = 0; t < L; t++)
        glaGateRow(c.q + t * Kp, c.G + t * Kp, nullptr, z.scale, Kp, qh + t * Kp, c.tmp);
      glaMatMul(L, Vp, Kp, qh, Kp, S, Vp, o, Vp, 1.0f, true);
      const int64_t row = (seq.batch * z.t + cs) * z.h + h;
      glaScatter(o, L, Vd, Vp, call.o + row * Vd, z.h * Vd);
      // S <- diag(e^{G_L}) S + (k * e^{G_L - G})^T v
      const double* GL = c.G + (L - 1) * Kp;
      for (int64_t x = 0; x < Kp; x++) c.tmp[x] = static_cast<float>(GL[x]);
      glaExpRow(c.tmp, Kp);
      for (int64_t x = 0; x < Kp; x++) {
        const V d = V::set1(c.tmp[x]);
        float* r = S + x * Vp;
        for (int64_t y = 0; y < Vp; y += V::L) (d * V::load(r + y)).store(r + y);
      }
      for (int64_t s = 0; s < L; s++) {
        glaGateRowBack(c.k + s * Kp, c.G + s * Kp, GL, 1.0f, Kp, kdT, c.tmp);
        for (int64_t x = 0; x < Kp; x++) klT[x * C + s] = kdT[x];
      }
      glaMatMul(Kp, Vp, L, klT, C, c.v, Vp, S, Vp, 1.0f, true);
    }
    if (call.ht != nullptr)
      for (int64_t x = 0; x < K; x++)
        for (int64_t y = 0; y < Vd; y++) call.ht[block + x * Vd + y] = S[x * Vp + y];
  };
  parallel(z.n * z.h, task);
  return nullptr;
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
