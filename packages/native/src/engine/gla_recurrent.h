// GLA's recurrent form (fla's fused_recurrent_gla; the TS twin recurrent.ts) in f32: per
// (sequence, head) pool task the K x V state, one token at a time (last to first with
// `reverse`), vectorised along V:
//   S_t = diag(e^{gk_t}) S_{t-1} + k_t^T v_t,   o_t = (scale q_t) S_t.
// The backward keeps the state every kGlaCheckpoint steps and recomputes those between (memory
// O((T / 64 + 64) K V) per task), with dS the gradient of S_t (dht after the last token):
//   dS += scale q_t^T dO_t;  dq_t = scale S_t dO_t;  dk_t = dS v_t;  dv_t = k_t dS;
//   dgk_t = e^{gk_t} rowsum(dS * S_{t-1});  dS <- diag(e^{gk_t}) dS
// (dgk straight from the states: its relative precision holds for any gate).
#pragma once

#include <cmath>

#include "gla_common.h"

namespace attnkit {
namespace ATTNKIT_NS {

constexpr int64_t kGlaCheckpoint = 64;  // recurrent.ts RECURRENT_CHECKPOINT

struct GlaRecurrentRows {
  const GlaDims& z;
  GlaSeq seq;
  int64_t h;
  // Row (b, t, h) of the i-th processed token.
  int64_t operator()(int64_t i) const {
    const int64_t t = z.reverse ? seq.eos - 1 - i : seq.bos + i;
    return (seq.batch * z.t + t) * z.h + h;
  }
};

// S <- diag(e^{gk}) S + k^T v for the token at `row` (S: K x Vp; vrow: the token's v, padded;
// dec: K floats of scratch for the decays).
inline void glaRecurrentStep(const GlaDims& z, const float* k, const float* gk, const float* vrow,
                             int64_t row, int64_t Vp, float* S, float* dec) {
  const int64_t K = z.k;
  // expf per channel: K exps against the K x V multiply-adds of the step.
  for (int64_t x = 0; x < K; x++) dec[x] = std::exp(gk[row * K + x]);
  for (int64_t x = 0; x < K; x++) {
    const V a = V::set1(dec[x]);
    const V kx = V::set1(k[row * K + x]);
    float* r = S + x * Vp;
    for (int64_t y = 0; y < Vp; y += V::L) V::fma(a, V::load(r + y), kx * V::load(vrow + y)).store(r + y);
  }
}

inline void glaLoadRow(const float* src, int64_t width, int64_t wp, float* dst) {
  int64_t x = 0;
  for (; x < width; x++) dst[x] = src[x];
  for (; x < wp; x++) dst[x] = 0.0f;
}

inline void glaLoadState(const GlaDims& z, const float* src, int64_t block, int64_t Vp, float* S) {
  for (int64_t x = 0; x < z.k; x++)
    for (int64_t y = 0; y < Vp; y++)
      S[x * Vp + y] = src != nullptr && y < z.v ? src[block + x * z.v + y] : 0.0f;
}

inline void glaStoreState(const GlaDims& z, const float* S, int64_t block, int64_t Vp, float* dst) {
  if (dst == nullptr) return;
  for (int64_t x = 0; x < z.k; x++)
    for (int64_t y = 0; y < z.v; y++) dst[block + x * z.v + y] = S[x * Vp + y];
}

inline const char* glaRecurrentForward(const GlaForwardCall& call) {
  const GlaDims& z = call.z;
  const int64_t K = z.k, Vd = z.v, Vp = glaPad(Vd);
  const int64_t per = roundUp(K * Vp + 2 * Vp + K + 16, 16);
  const int threads = poolThreads();
  Floats scratch(per * threads);
  if (!scratch.ok()) return kOutOfMemory;
  auto task = [&](int64_t task, int thread) {
    const int64_t n = task / z.h, h = task % z.h;
    const GlaRecurrentRows rows{z, glaSeq(z, n), h};
    float* S = scratch.get() + per * thread;
    float* vrow = S + K * Vp;
    float* acc = vrow + Vp;
    float* dec = acc + Vp;
    const int64_t block = (n * z.h + h) * K * Vd;
    glaLoadState(z, call.h0, block, Vp, S);
    const int64_t len = rows.seq.eos - rows.seq.bos;
    for (int64_t i = 0; i < len; i++) {
      const int64_t row = rows(i);
      glaLoadRow(call.v + row * Vd, Vd, Vp, vrow);
      glaRecurrentStep(z, call.k, call.gk, vrow, row, Vp, S, dec);
      for (int64_t y = 0; y < Vp; y++) acc[y] = 0.0f;
      for (int64_t x = 0; x < K; x++) {
        const V f = V::set1(z.scale * call.q[row * K + x]);
        const float* r = S + x * Vp;
        for (int64_t y = 0; y < Vp; y += V::L) V::fma(f, V::load(r + y), V::load(acc + y)).store(acc + y);
      }
      for (int64_t y = 0; y < Vd; y++) call.o[row * Vd + y] = acc[y];
    }
    glaStoreState(z, S, block, Vp, call.ht);
  };
  parallel(z.n * z.h, task);
  return nullptr;
}

inline int64_t glaMaxLength(const GlaDims& z) {
  int64_t most = 0;
  for (int64_t n = 0; n < z.n; n++) {
    const GlaSeq s = glaSeq(z, n);
    most = imax(most, s.eos - s.bos);
  }
  return most;
}

inline int64_t glaRecurrentBackwardFloats(const GlaDims& z) {
  const int64_t KV = z.k * glaPad(z.v), Vp = glaPad(z.v);
  const int64_t segments = ceilDiv(glaMaxLength(z), kGlaCheckpoint);
  return roundUp(KV * (segments + kGlaCheckpoint + 2) + 4 * Vp + 2 * z.k + 16, 16);
}

inline const char* glaRecurrentBackward(const GlaBackwardCall& call) {
  const GlaDims& z = call.z;
  const int64_t K = z.k, Vd = z.v, Vp = glaPad(Vd), KV = K * Vp;
  const int64_t per = glaRecurrentBackwardFloats(z);
  const int threads = poolThreads();
  Floats scratch(per * threads);
  if (!scratch.ok()) return kOutOfMemory;
  const float scale = z.scale;
  auto task = [&](int64_t task, int thread) {
    const int64_t n = task / z.h, h = task % z.h;
    const GlaRecurrentRows rows{z, glaSeq(z, n), h};
    const int64_t len = rows.seq.eos - rows.seq.bos;
    const int64_t segments = ceilDiv(len, kGlaCheckpoint);
    float* dS = scratch.get() + per * thread;
    float* states = dS + KV;                          // (kGlaCheckpoint + 1) states
    float* checkpoints = states + (kGlaCheckpoint + 1) * KV;  // one per segment
    float* vrow = checkpoints + imax(segments, 1) * KV;
    float* dorow = vrow + Vp;
    float* dv = dorow + Vp;
    float* dec = dv + Vp;
    const int64_t block = (n * z.h + h) * K * Vd;
    float* S = states;  // the forward pass runs in the first state slot
    glaLoadState(z, call.h0, block, Vp, S);
    for (int64_t i = 0; i < len; i++) {
      if (i % kGlaCheckpoint == 0)
        for (int64_t e = 0; e < KV; e++) checkpoints[(i / kGlaCheckpoint) * KV + e] = S[e];
      const int64_t row = rows(i);
      glaLoadRow(call.v + row * Vd, Vd, Vp, vrow);
      glaRecurrentStep(z, call.k, call.gk, vrow, row, Vp, S, dec);
    }
    glaLoadState(z, call.dht, block, Vp, dS);
    for (int64_t c = segments - 1; c >= 0; c--) {
      const int64_t i0 = c * kGlaCheckpoint;
      const int64_t cnt = imin(len, i0 + kGlaCheckpoint) - i0;
      for (int64_t e = 0; e < KV; e++) states[e] = checkpoints[c * KV + e];
      for (int64_t j = 0; j < cnt; j++) {
        float* next = states + (j + 1) * KV;
        for (int64_t e = 0; e < KV; e++) next[e] = states[j * KV + e];
        const int64_t row = rows(i0 + j);
        glaLoadRow(call.v + row * Vd, Vd, Vp, vrow);
        glaRecurrentStep(z, call.k, call.gk, vrow, row, Vp, next, dec);
      }
      for (int64_t j = cnt - 1; j >= 0; j--) {
        const int64_t row = rows(i0 + j);
        const float* St = states + (j + 1) * KV;
        const float* Sp = states + j * KV;
        glaLoadRow(call.v + row * Vd, Vd, Vp, vrow);
        glaLoadRow(call.dO + row * Vd, Vd, Vp, dorow);
        const float* q = call.q + row * K;
        const float* k = call.k + row * K;
        for (int64_t x = 0; x < K; x++) {
          const V qx = V::set1(scale * q[x]);
          float* d = dS + x * Vp;
          const float* s = St + x * Vp;
          V dq = V::zero();
          for (int64_t y = 0; y < Vp; y += V::L) {
            const V g = V::load(dorow + y);
            V::fma(qx, g, V::load(d + y)).store(d + y);
            dq = V::fma(V::load(s + y), g, dq);
          }
          call.dq[row * K + x] = scale * V::hsum(dq);
        }
        for (int64_t y = 0; y < Vp; y++) dv[y] = 0.0f;
        for (int64_t x = 0; x < K; x++) {
          const V kx = V::set1(k[x]);
          const float* d = dS + x * Vp;
          for (int64_t y = 0; y < Vp; y += V::L) V::fma(kx, V::load(d + y), V::load(dv + y)).store(dv + y);
        }
        for (int64_t y = 0; y < Vd; y++) call.dv[row * Vd + y] = dv[y];
        for (int64_t x = 0; x < K; x++) dec[x] = std::exp(call.gk[row * K + x]);
        for (int64_t x = 0; x < K; x++) {
          const V a = V::set1(dec[x]);
          float* d = dS + x * Vp;
          const float* s = Sp + x * Vp;
          V dk = V::zero(), dg = V::zero();
          for (int64_t y = 0; y < Vp; y += V::L) {
            const V g = V::load(d + y);
            dk = V::fma(g, V::load(vrow + y), dk);
            dg = V::fma(g, V::load(s + y), dg);
            (a * g).store(d + y);
          }
          call.dk[row * K + x] = V::hsum(dk);
          call.dgk[row * K + x] = dec[x] * V::hsum(dg);
        }
      }
    }
    glaStoreState(z, dS, block, Vp, call.dh0);
  };
  parallel(z.n * z.h, task);
  return nullptr;
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
