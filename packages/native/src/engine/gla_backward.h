// GLA chunk backward (engine.h kOpGlaBackward), chunk.ts chunkGlaBackwardArrays in f32 with
// the gate gradient's sums in double. The chunk states are recomputed first (one Kp x Vp state
// per chunk, in the task's scratch), then the chunks are visited last to first with dS, the
// gradient of the state after the chunk (dht at the end):
//   dA_ts = scale dO_t . v_s (s <= t);  dv_s = sum_{t>=s} A_ts dO_t + (k_s * e^{G_L - G_s}) dS
//   dq_t  = sum_{s<=t} dA_ts k_s e^{G_t - G_s} + scale e^{G_t} * (S dO_t)
//   dk_s  = sum_{t>=s} dA_ts q_t e^{G_t - G_s} + e^{G_L - G_s} * (dS v_s)
//   dS    <- diag(e^{G_L}) dS + scale sum_t (q_t * e^{G_t})^T dO_t
// dgk as chunk.ts, without the catastrophic cancellation of the textbook q dq - k dk: the
// diagonal pairs (relative gate 1) are left out of dG (they cancel exactly) and the state terms
// are summed as the prefix of the decayed state instead of as a difference; the suffix sums and
// the prefix are kept in double.
#pragma once

#include "gla_forward.h"

namespace attnkit {
namespace ATTNKIT_NS {

// Vectors of channels a diagonal sub-chunk block keeps in registers.
constexpr int kGlaXB = 4;

// The strictly causal intra-chunk part of dq (chunk-math.ts intraChunkGradQ): dq (L x Kp).
inline void glaIntraGradQ(const GlaChunk& c, int64_t L, const float* dA, float* kh, float* kd,
                          float* dq) {
  const int64_t C = c.C, Kp = c.Kp;
  for (int64_t a = 0; a < L; a += kGlaSub) {
    const int64_t e = imin(L, a + kGlaSub);
    const double* Gr = c.G + a * Kp;
    if (a > 0) {
      for (int64_t s = 0; s < a; s++)
        glaGateRowBack(c.k + s * Kp, c.G + s * Kp, Gr, 1.0f, Kp, kh + s * Kp, c.tmp);
      glaMatMul(e - a, Kp, a, dA + a * C, C, kh, Kp, dq + a * Kp, Kp, 1.0f, false);
      for (int64_t t = a; t < e; t++)
        glaGateRow(dq + t * Kp, c.G + t * Kp, Gr, 1.0f, Kp, dq + t * Kp, c.tmp);
    } else {
      for (int64_t i = 0; i < (e - a) * Kp; i++) dq[i] = 0.0f;
    }
    // kd[s] = k_s e^{G_t - G_s} for the current row t, decayed one step per row. Blocks of
    // kGlaXB vectors of channels: dq_t's block stays in registers while s runs (no store-to-load
    // chain through memory).
    for (int64_t x0 = 0; x0 < Kp; x0 += kGlaXB * V::L) {
      const int nb = static_cast<int>(imin(kGlaXB, (Kp - x0) / V::L));
      for (int64_t t = a; t < e; t++) {
        V acc[kGlaXB], dec[kGlaXB];
        float* out = dq + t * Kp + x0;
        for (int v = 0; v < kGlaXB; v++) {
          acc[v] = dec[v] = V::zero();
          if (v < nb) {
            acc[v] = V::load(out + v * V::L);
            dec[v] = V::load(c.g + t * Kp + x0 + v * V::L);
          }
        }
        for (int64_t s = a; s < t; s++) {
          float* kds = kd + s * Kp + x0;
          const V w = V::set1(dA[t * C + s]);
          for (int v = 0; v < kGlaXB; v++)
            if (v < nb) {
              const V kv = V::load(kds + v * V::L) * dec[v];
              kv.store(kds + v * V::L);
              acc[v] = V::fma(w, kv, acc[v]);
            }
        }
        for (int v = 0; v < kGlaXB; v++)
          if (v < nb) acc[v].store(out + v * V::L);
        for (int64_t x = x0; x < x0 + nb * V::L; x++) kd[t * Kp + x] = c.k[t * Kp + x];
      }
    }
  }
}

// The strictly causal intra-chunk part of dk (chunk-math.ts intraChunkGradK) from dAT
// (dAT[s][t] = dA_ts): for a key sub-chunk and the later query rows the reference row is the
// sub-chunk's last row.
inline void glaIntraGradK(const GlaChunk& c, int64_t L, const float* dAT, float* qh, float* qd,
                          float* dk) {
  const int64_t C = c.C, Kp = c.Kp;
  for (int64_t a = 0; a < L; a += kGlaSub) {
    const int64_t e = imin(L, a + kGlaSub);
    const double* Gr = c.G + (e - 1) * Kp;
    if (e < L) {
      for (int64_t t = e; t < L; t++)
        glaGateRow(c.q + t * Kp, c.G + t * Kp, Gr, 1.0f, Kp, qh + t * Kp, c.tmp);
      glaMatMul(e - a, Kp, L - e, dAT + a * C + e, C, qh + e * Kp, Kp, dk + a * Kp, Kp, 1.0f,
                false);
      for (int64_t s = a; s < e; s++)
        glaGateRowBack(dk + s * Kp, c.G + s * Kp, Gr, 1.0f, Kp, dk + s * Kp, c.tmp);
    } else {
      for (int64_t i = 0; i < (e - a) * Kp; i++) dk[a * Kp + i] = 0.0f;
    }
    // qd[t] = q_t e^{G_t - G_s} for the current row s, t in (s, e); s runs backwards and each
    // step down multiplies by dec_{s+1}. dk_s's block of channels stays in registers.
    for (int64_t x0 = 0; x0 < Kp; x0 += kGlaXB * V::L) {
      const int nb = static_cast<int>(imin(kGlaXB, (Kp - x0) / V::L));
      for (int64_t s = e - 1; s >= a; s--) {
        V acc[kGlaXB];
        float* out = dk + s * Kp + x0;
        for (int v = 0; v < kGlaXB; v++) acc[v] = v < nb ? V::load(out + v * V::L) : V::zero();
        for (int64_t t = s + 1; t < e; t++) {
          const V w = V::set1(dAT[s * C + t]);
          const float* qdt = qd + t * Kp + x0;
          for (int v = 0; v < kGlaXB; v++)
            if (v < nb) acc[v] = V::fma(w, V::load(qdt + v * V::L), acc[v]);
        }
        for (int v = 0; v < kGlaXB; v++)
          if (v < nb) acc[v].store(out + v * V::L);
        if (s == a) break;
        V dec[kGlaXB];
        for (int v = 0; v < kGlaXB; v++)
          dec[v] = v < nb ? V::load(c.g + s * Kp + x0 + v * V::L) : V::zero();
        for (int64_t t = s + 1; t < e; t++) {
          float* qdt = qd + t * Kp + x0;
          for (int v = 0; v < kGlaXB; v++)
            if (v < nb) (V::load(qdt + v * V::L) * dec[v]).store(qdt + v * V::L);
        }
        const float* qs = c.q + s * Kp + x0;
        for (int v = 0; v < kGlaXB; v++)
          if (v < nb) (V::load(qs + v * V::L) * dec[v]).store(qd + s * Kp + x0 + v * V::L);
      }
    }
  }
}

struct GlaBackwardLayout {
  int64_t C, Kp, Vp, chunks;
  int64_t floats() const {
    return GlaChunk::floats(C, Kp, Vp) + 4 * C * C  // A, AT, dA, dAT
           + 2 * C * Vp                             // dO, dv
           + Vp * C                                 // vT
           + Kp * C + Kp * kGlaSub                  // khT, kdT (scores)
           + 7 * C * Kp                             // work, kd, dq, dk, sdo, w, eRow
           + 2 * C * Kp                             // dG (double)
           + Kp * C                                 // qgT
           + 2 * Vp * Kp                            // SnT, dST
           + 2 * Kp * Vp                            // S, dS
           + 2 * Kp                                 // prefix (double)
           + chunks * Kp * Vp + 64;
  }
};

inline int64_t glaMaxChunks(const GlaDims& z) {
  int64_t most = 0;
  for (int64_t n = 0; n < z.n; n++) {
    const GlaSeq s = glaSeq(z, n);
    most = imax(most, ceilDiv(s.eos - s.bos, z.chunk));
  }
  return most;
}

inline void glaBackwardScratch(const GlaDims& z, int64_t* perThread, int64_t* shared) {
  const GlaBackwardLayout lay{z.chunk, glaPad(z.k), glaPad(z.v), glaMaxChunks(z)};
  *perThread = roundUp(lay.floats(), 16);
  *shared = 0;
}

inline const char* glaBackward(const GlaBackwardCall& call) {
  const GlaDims& z = call.z;
  const int64_t C = z.chunk, K = z.k, Vd = z.v, Kp = glaPad(K), Vp = glaPad(Vd);
  const GlaBackwardLayout lay{C, Kp, Vp, glaMaxChunks(z)};
  const int64_t per = roundUp(lay.floats(), 16);
  const int threads = poolThreads();
  Floats scratch(per * threads);
  if (!scratch.ok()) return kOutOfMemory;
  const float scale = z.scale;
  auto task = [&](int64_t task, int thread) {
    const int64_t n = task / z.h, h = task % z.h;
    const GlaSeq seq = glaSeq(z, n);
    GlaChunk c{C, K, Vd, Kp, Vp};
    float* p = scratch.get() + per * thread;
    c.bind(p);
    p += GlaChunk::floats(C, Kp, Vp);
    auto take = [&](int64_t count) {
      float* r = p;
      p += count;
      return r;
    };
    float* A = take(C * C);
    float* AT = take(C * C);
    float* dA = take(C * C);
    float* dAT = take(C * C);
    float* dO = take(C * Vp);
    float* dv = take(C * Vp);
    float* vT = take(Vp * C);
    float* khT = take(Kp * C);
    float* kdT = take(Kp * kGlaSub);
    float* work = take(C * Kp);
    float* kd = take(C * Kp);
    float* dq = take(C * Kp);
    float* dk = take(C * Kp);
    float* sdo = take(C * Kp);
    float* w = take(C * Kp);
    float* eRow = take(C * Kp);
    double* dG = reinterpret_cast<double*>(take(2 * C * Kp));
    float* qgT = take(Kp * C);
    float* SnT = take(Vp * Kp);
    float* dST = take(Vp * Kp);
    float* S = take(Kp * Vp);
    float* dS = take(Kp * Vp);
    double* prefix = reinterpret_cast<double*>(take(2 * Kp));
    float* states = p;
    const int64_t KVp = Kp * Vp;
    const int64_t block = (n * z.h + h) * K * Vd;
    auto loadState = [&](const float* src, float* dst) {
      for (int64_t x = 0; x < Kp; x++)
        for (int64_t y = 0; y < Vp; y++)
          dst[x * Vp + y] = src != nullptr && x < K && y < Vd ? src[block + x * Vd + y] : 0.0f;
    };
    // e^{G_L} per key channel into c.tmp.
    auto lastDecay = [&](int64_t L) {
      const double* GL = c.G + (L - 1) * Kp;
      for (int64_t x = 0; x < Kp; x++) c.tmp[x] = static_cast<float>(GL[x]);
      glaExpRow(c.tmp, Kp);
    };
    auto decayRows = [&](float* M) {
      for (int64_t x = 0; x < Kp; x++) {
        const V d = V::set1(c.tmp[x]);
        float* r = M + x * Vp;
        for (int64_t y = 0; y < Vp; y += V::L) (d * V::load(r + y)).store(r + y);
      }
    };
    // Pass 1: the state before each chunk.
    loadState(call.h0, S);
    const int64_t chunks = ceilDiv(seq.eos - seq.bos, C);
    for (int64_t ci = 0; ci < chunks; ci++) {
      const int64_t cs = seq.bos + ci * C;
      const int64_t L = imin(C, seq.eos - cs);
      for (int64_t i = 0; i < KVp; i++) states[ci * KVp + i] = S[i];
      c.load(z, nullptr, call.k, call.v, call.gk, seq.batch, h, cs, L);
      if (cs + C < seq.eos)
        c.prefetch(z, nullptr, call.k, call.v, call.gk, nullptr, seq.batch, h, cs + C,
                   imin(C, seq.eos - cs - C));
      lastDecay(L);
      decayRows(S);
      const double* GL = c.G + (L - 1) * Kp;
      for (int64_t s = 0; s < L; s++) {
        glaGateRowBack(c.k + s * Kp, c.G + s * Kp, GL, 1.0f, Kp, kdT, eRow);
        for (int64_t x = 0; x < Kp; x++) khT[x * C + s] = kdT[x];
      }
      glaMatMul(Kp, Vp, L, khT, C, c.v, Vp, S, Vp, 1.0f, true);
    }
    // Pass 2: the chunks last to first.
    loadState(call.dht, dS);
    for (int64_t ci = chunks - 1; ci >= 0; ci--) {
      const int64_t cs = seq.bos + ci * C;
      const int64_t L = imin(C, seq.eos - cs);
      const int64_t Lp = glaPad(L);
      const float* Sn = states + ci * KVp;
      c.load(z, call.q, call.k, call.v, call.gk, seq.batch, h, cs, L);
      const int64_t row = (seq.batch * z.t + cs) * z.h + h;
      glaGather(call.dO + row * Vd, z.h * Vd, L, Vd, Vp, dO);
      if (ci > 0)  // the chunk before, next in this pass (always a whole chunk)
        c.prefetch(z, call.q, call.k, call.v, call.gk, call.dO, seq.batch, h, cs - C, C);
      for (int64_t t = 0; t < L; t++)
        for (int64_t s = 0; s < Lp; s++) A[t * C + s] = 0.0f;
      glaIntraScores(c, L, scale, A, work, khT, kdT);
      // dA = scale dO v^T (s <= t; the upper triangle zeroed).
      for (int64_t y = 0; y < Vp; y++)
        for (int64_t s = 0; s < Lp; s++) vT[y * C + s] = s < L ? c.v[s * Vp + y] : 0.0f;
      glaMatMul(L, Lp, Vp, dO, Vp, vT, C, dA, C, scale, false);
      for (int64_t t = 0; t < L; t++)
        for (int64_t s = t + 1; s < Lp; s++) dA[t * C + s] = 0.0f;
      for (int64_t s = 0; s < Lp; s++)
        for (int64_t t = 0; t < Lp; t++) {
          const bool in = s < L && t < L;
          AT[s * C + t] = in ? A[t * C + s] : 0.0f;
          dAT[s * C + t] = in ? dA[t * C + s] : 0.0f;
        }
      // dv = A^T dO (t >= s) + (k * e^{G_L - G}) dS
      glaMatMul(L, Vp, L, AT, C, dO, Vp, dv, Vp, 1.0f, false, GlaTri::kUpper);
      const double* GL = c.G + (L - 1) * Kp;
      for (int64_t s = 0; s < L; s++)
        glaGateRowBack(c.k + s * Kp, c.G + s * Kp, GL, 1.0f, Kp, work + s * Kp, c.tmp);
      glaMatMul(L, Vp, Kp, work, Kp, dS, Vp, dv, Vp, 1.0f, true);
      glaIntraGradQ(c, L, dA, work, kd, dq);
      glaIntraGradK(c, L, dAT, work, kd, dk);
      // S dO_t and dS v_s for every row at once.
      glaTranspose(Sn, Vp, Kp, Vp, SnT, Kp);
      glaTranspose(dS, Vp, Kp, Vp, dST, Kp);
      glaMatMul(L, Kp, Vp, dO, Vp, SnT, Kp, sdo, Kp, 1.0f, false);
      glaMatMul(L, Kp, Vp, c.v, Vp, dST, Kp, w, Kp, 1.0f, false);
      for (int64_t t = 0; t < L; t++) {
        const double* Gt = c.G + t * Kp;
        for (int64_t x = 0; x < Kp; x++) c.tmp[x] = static_cast<float>(Gt[x]);
        glaExpRow(c.tmp, Kp);
        const float dAtt = dA[t * C + t];
        const float* qt = c.q + t * Kp;
        const float* kt = c.k + t * Kp;
        float* dqt = dq + t * Kp;
        const float* dkt = dk + t * Kp;
        const float* sdot = sdo + t * Kp;
        double* dGt = dG + t * Kp;
        for (int64_t x = 0; x < Kp; x++) {
          const float inter = scale * c.tmp[x] * sdot[x];
          dGt[x] = static_cast<double>(qt[x]) * (static_cast<double>(dqt[x]) + inter) -
                   static_cast<double>(kt[x]) * dkt[x];
          dqt[x] = dqt[x] + inter + dAtt * kt[x];
          // qgT = scale q e^{G} (transposed) for dS below.
          qgT[x * C + t] = scale * qt[x] * c.tmp[x];
        }
      }
      for (int64_t t = L - 2; t >= 0; t--)
        for (int64_t x = 0; x < Kp; x++) dG[t * Kp + x] += dG[(t + 1) * Kp + x];
      lastDecay(L);
      for (int64_t x = 0; x < Kp; x++) {
        double c0 = 0;
        const float* ds = dS + x * Vp;
        const float* sn = Sn + x * Vp;
        for (int64_t y = 0; y < Vp; y++) c0 += static_cast<double>(ds[y]) * sn[y];
        prefix[x] = c.tmp[x] * c0;
      }
      for (int64_t s = 0; s < L; s++) {
        const float dAss = dA[s * C + s];
        glaGateRowBack(w + s * Kp, c.G + s * Kp, GL, 1.0f, Kp, eRow, eRow + Kp);
        const float* qs = c.q + s * Kp;
        const float* ks = c.k + s * Kp;
        float* dks = dk + s * Kp;
        double* dGs = dG + s * Kp;
        for (int64_t x = 0; x < Kp; x++) {
          const float fw = eRow[x];  // e^{G_L - G_s} (dS v_s)
          dGs[x] += prefix[x];
          prefix[x] += static_cast<double>(ks[x]) * fw;
          dks[x] = dks[x] + fw + dAss * qs[x];
        }
      }
      // dS for the chunk before: diag(e^{G_L}) dS + (scale q * e^{G})^T dO.
      decayRows(dS);
      glaMatMul(Kp, Vp, L, qgT, C, dO, Vp, dS, Vp, 1.0f, true);
      glaScatter(dq, L, K, Kp, call.dq + row * K, z.h * K);
      glaScatter(dk, L, K, Kp, call.dk + row * K, z.h * K);
      glaScatter(dv, L, Vd, Vp, call.dv + row * Vd, z.h * Vd);
      float* dgk = call.dgk + row * K;
      for (int64_t t = 0; t < L; t++)
        for (int64_t x = 0; x < K; x++) dgk[t * z.h * K + x] = static_cast<float>(dG[t * Kp + x]);
    }
    if (call.dh0 != nullptr)
      for (int64_t x = 0; x < K; x++)
        for (int64_t y = 0; y < Vd; y++) call.dh0[block + x * Vd + y] = dS[x * Vp + y];
  };
  parallel(z.n * z.h, task);
  return nullptr;
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
