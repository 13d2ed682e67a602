// SageAttention2's pre-pass (op sage.quantize): inputs -> codes and scales exactly as
// packages/sage-attention/ARITHMETIC.md "Pre-pass" (the TS quantizeSageTs is the spec; codes are
// equal bit for bit): smooth K (per-channel mean over the keys), smooth Q (per 128-row block
// mean, its rank-one term qm . Ks as the bias), symmetric per-group scales and codes of Q and K
// (4 or 8 bits per query head; K of a kv head at 8 bits if any of its query heads is), V per
// channel (pvBits 8). Every "sum64" is a binary64 sum in ascending index order (the order the
// TS spec uses, so even the double rounding of a sum agrees), rounded once to f32.
//
// Three parallel passes, none with a buffer of the size of the inputs: (b, query head) the Q
// block means; (b, kv head) K's smoothing, scales and codes, V's, and the bias of every query
// head of the group (each smoothed key row meets all their block means while it is in L1;
// the sums run over the (head, block) pairs in the vector lanes, each still in channel order);
// (b, query head) Q's scales and codes.
#pragma once

#include <cstring>

#include "sage_common.h"

namespace attnkit {
namespace ATTNKIT_NS {

constexpr const char* kSageNonFiniteQ =
    "q: expected finite values (a NaN or infinity makes the quantization scales meaningless)";
constexpr const char* kSageNonFiniteK =
    "k: expected finite values (a NaN or infinity makes the quantization scales meaningless)";
constexpr const char* kSageNonFiniteV =
    "v: expected finite values (a NaN or infinity makes the quantization scales meaningless)";

// The codes of n values x - m (m null: x) at scale s: clamp(rint((x - m) / s), -qmax, qmax) with
// the quotient in binary64 (sageCode), in a loop the compiler vectorises (s = 0: all 0).
inline void sageCodes(const float* x, const float* m, int64_t n, float s, int qmax, int8_t* out) {
  if (s == 0.0f) {
    for (int64_t i = 0; i < n; i++) out[i] = 0;
    return;
  }
  const double sd = s, lim = qmax;
  for (int64_t i = 0; i < n; i++) {
    const float xi = m != nullptr ? x[i] - m[i] : x[i];
    double r = std::nearbyint(static_cast<double>(xi) / sd);
    r = r > lim ? lim : r;
    r = r < -lim ? -lim : r;
    out[i] = static_cast<int8_t>(static_cast<int32_t>(r));
  }
}

// Per scale group g, max |x[i] - mean(i)| over its rows i (gmax[g]; 0 for an empty group):
// running maxima in the lanes per group (gvec: nG V::L floats), one reduction per group at the
// end. d is a multiple of 16, so of V::L. Finite inputs.
template <class MeanOf, class GroupOf>
inline void sageGroupMaxima(const float* x, int64_t rows, int64_t d, MeanOf meanOf, GroupOf groupOf,
                            int64_t nG, float* gvec, float* gmax) {
  for (int64_t g = 0; g < nG; g++) V::zero().store(gvec + g * V::L);
  for (int64_t i = 0; i < rows; i++) {
    const float* m = meanOf(i);
    float* gv = gvec + groupOf(i) * V::L;
    V acc = V::load(gv);
    for (int64_t c = 0; c < d; c += V::L) acc = V::max(acc, V::abs(V::load(x + i * d + c) - V::load(m + c)));
    acc.store(gv);
  }
  for (int64_t g = 0; g < nG; g++) {
    float a = 0.0f;
    for (int l = 0; l < V::L; l++) a = gvec[g * V::L + l] > a ? gvec[g * V::L + l] : a;
    gmax[g] = a;
  }
}

// The bias's sums run over 4 keys x up to 32 (head, block) pairs at a time: 16 independent
// vectors of 8 doubles (chains per key and pair block, so the fma latency is hidden; each
// smoothed key value broadcast once per channel for up to 4 fmas), each lane's sum in channel
// order.
typedef double SageD8 __attribute__((vector_size(64)));
constexpr int64_t kSageBiasKeys = 4;
// Pair blocks of 8 per register block: 4 with AVX-512's 32 registers; one with AVX2's 16 (4 x 4
// vectors of 8 doubles would spill every fma's accumulator).
constexpr int64_t kSageBiasMB = V::L == 16 ? 4 : 1;

// acc[kk * MB + mb] = the sums of pairs m0 + 8 mb .. + 7 for keys kk < 4: sum64_c
// w[c Mp + m] ksd[kk d + c] (ksd: the keys' smoothed rows in binary64).
template <int MB>
ATTNKIT_ALWAYS_INLINE void sageBiasBlock(const double* w, int64_t Mp, int64_t m0, const double* ksd,
                                         int64_t d, SageD8* acc) {
  SageD8 a[kSageBiasKeys][MB];
  for (int64_t kk = 0; kk < kSageBiasKeys; kk++)
    for (int mb = 0; mb < MB; mb++) a[kk][mb] = SageD8{0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t ch = 0; ch < d; ch++) {
    SageD8 wc[MB];
    for (int mb = 0; mb < MB; mb++) std::memcpy(&wc[mb], w + ch * Mp + m0 + 8 * mb, sizeof(SageD8));
    for (int64_t kk = 0; kk < kSageBiasKeys; kk++) {
      const double x = ksd[kk * d + ch];
      for (int mb = 0; mb < MB; mb++) a[kk][mb] += wc[mb] * x;
    }
  }
  for (int64_t kk = 0; kk < kSageBiasKeys; kk++)
    for (int mb = 0; mb < MB; mb++) acc[kk * MB + mb] = a[kk][mb];
}

// Pass 1, (b, query head h): qm[a, c] = f32(sum64_{i in a} Q[i, c] / n_a) per 128-row block a
// into qmAll [B, hq, nQB, d] (smoothQ only).
inline bool sageQMeans(const SageQuantizeCall& c, int64_t b, int64_t h, double* sum, float* qm) {
  const SageDims& z = c.z;
  const int64_t d = z.d;
  const float* q = c.q + (b * z.hq + h) * z.nq * d;
  if (!sageAllFinite(q, z.nq * d)) return false;
  for (int64_t a = 0; a < z.nQB; a++) {
    const int64_t i0 = a * kSageQBlock, i1 = std::min(z.nq, i0 + kSageQBlock);
    for (int64_t ch = 0; ch < d; ch++) sum[ch] = 0.0;
    for (int64_t i = i0; i < i1; i++)
      for (int64_t ch = 0; ch < d; ch++) sum[ch] += static_cast<double>(q[i * d + ch]);
    for (int64_t ch = 0; ch < d; ch++)
      qm[a * d + ch] = static_cast<float>(sum[ch] / static_cast<double>(i1 - i0));
  }
  return true;
}

// Pass 2, (b, kv head hk): K smoothed, its scales and codes; V's; the bias of the group's query
// heads. Scratch: sum (d doubles), km (d), ks (4 d doubles), gmax (nKG), gvec (nKG V::L),
// w (d x Mp doubles, Mp = group nQB rounded up to 8: the block means transposed), vrow (2 dv
// doubles).
inline bool sageQuantizeKv(const SageQuantizeCall& c, int64_t b, int64_t hk, const float* qmAll,
                           double* sum, float* km, float* ks, float* gmax, float* gvec,
                           double* w, double* vrow, bool* vFinite) {
  const SageDims& z = c.z;
  const int64_t nk = z.nk, d = z.d, dv = z.dv;
  const float* k = c.k + (b * z.hkv + hk) * nk * d;
  const float* v = c.v + (b * z.hkv + hk) * nk * dv;
  *vFinite = sageAllFinite(v, nk * dv);
  if (!sageAllFinite(k, nk * d)) return false;
  // km[c] = f32(sum64_j K[j, c] / Nk).
  for (int64_t ch = 0; ch < d; ch++) sum[ch] = 0.0;
  if (c.smoothK && nk > 0) {
    for (int64_t j = 0; j < nk; j++)
      for (int64_t ch = 0; ch < d; ch++) sum[ch] += static_cast<double>(k[j * d + ch]);
  }
  for (int64_t ch = 0; ch < d; ch++)
    km[ch] = c.smoothK && nk > 0 ? static_cast<float>(sum[ch] / static_cast<double>(nk)) : 0.0f;
  // K of the group uses 8 bits if any of its query heads does.
  int qmax = 7;
  for (int64_t h = hk * z.group; h < (hk + 1) * z.group; h++)
    if (c.qBits[h] == 8) qmax = 127;
  float* kScale = c.kScale + (b * z.hkv + hk) * z.nKG;
  sageGroupMaxima(
      k, nk, d, [&](int64_t) { return km; },
      [&](int64_t j) { return sageKGroup(j, z.granularity); }, z.nKG, gvec, gmax);
  for (int64_t g = 0; g < z.nKG; g++) kScale[g] = sageScale(gmax[g], qmax);
  int8_t* kc = c.kCodes + (b * z.hkv + hk) * nk * d;
  for (int64_t j = 0; j < nk; j++)
    sageCodes(k + j * d, km, d, kScale[sageKGroup(j, z.granularity)], qmax, kc + j * d);

  if (c.smoothQ) {
    // dS[a, j] = f32(sum64_c qm[a, c] Ks[j, c]) for the M = group nQB (head, block) pairs of
    // this kv head (w: their means transposed, [d][Mp] with Mp = M rounded up to 8, zero
    // padded): the products of two f32 are exact in binary64, so each pair's sum is the
    // sequential one over c whatever runs in the lanes. Keys 4 at a time (ksd: their smoothed
    // rows in binary64; past nk zero).
    const int64_t M = z.group * z.nQB, Mp = roundUp(M, 8);
    for (int64_t ch = 0; ch < d; ch++) {
      for (int64_t m = 0; m < Mp; m++) {
        const int64_t hh = m / z.nQB, a = m % z.nQB;
        w[ch * Mp + m] =
            m < M ? static_cast<double>(qmAll[((b * z.hq + hk * z.group + hh) * z.nQB + a) * d + ch])
                  : 0.0;
      }
    }
    SageD8 acc[kSageBiasKeys * 4];
    double* ksd = reinterpret_cast<double*>(ks);  // kSageBiasKeys rows of d doubles
    for (int64_t j0 = 0; j0 < nk; j0 += kSageBiasKeys) {
      const int64_t jn = std::min(kSageBiasKeys, nk - j0);
      for (int64_t kk = 0; kk < kSageBiasKeys; kk++)
        for (int64_t ch = 0; ch < d; ch++)
          ksd[kk * d + ch] = kk < jn ? static_cast<double>(k[(j0 + kk) * d + ch] - km[ch]) : 0.0;
      for (int64_t m0 = 0; m0 < Mp;) {
        const int64_t mbs = std::min<int64_t>(kSageBiasMB, (Mp - m0) / 8);
        if (mbs == 4) sageBiasBlock<4>(w, Mp, m0, ksd, d, acc);
        else if (mbs == 3) sageBiasBlock<3>(w, Mp, m0, ksd, d, acc);
        else if (mbs == 2) sageBiasBlock<2>(w, Mp, m0, ksd, d, acc);
        else sageBiasBlock<1>(w, Mp, m0, ksd, d, acc);
        for (int64_t mb = 0; mb < mbs; mb++) {
          for (int64_t lane = 0; lane < 8 && m0 + 8 * mb + lane < M; lane++) {
            const int64_t m = m0 + 8 * mb + lane;
            const int64_t hh = m / z.nQB, a = m % z.nQB;
            float* bias = c.bias + ((b * z.hq + hk * z.group + hh) * z.nQB + a) * nk + j0;
            for (int64_t kk = 0; kk < jn; kk++)
              bias[kk] = static_cast<float>(acc[kk * mbs + mb][lane]);
          }
        }
        m0 += 8 * mbs;
      }
    }
  }

  if (c.pvBits != 8 || !*vFinite) return true;
  // V per channel over all keys: sV = f32(max |V| / 127), dV = f32(sV / 255).
  float* sv = c.vScale + (b * z.hkv + hk) * dv;
  for (int64_t ch = 0; ch < dv; ch++) sv[ch] = 0.0f;
  for (int64_t j = 0; j < nk; j++)
    for (int64_t ch = 0; ch < dv; ch++) {
      const float y = std::fabs(v[j * dv + ch]);
      sv[ch] = y > sv[ch] ? y : sv[ch];
    }
  for (int64_t ch = 0; ch < dv; ch++) sv[ch] = sageScale(sv[ch], 127);
  int8_t* vc = c.vCodes + (b * z.hkv + hk) * nk * dv;
  // Scales per channel along the row; a zero scale divides by 1 and keeps 0 (live = 0), so the
  // row's loop has no branch and vectorises.
  double* sd = vrow;
  double* live = vrow + dv;
  for (int64_t ch = 0; ch < dv; ch++) {
    sd[ch] = sv[ch] != 0.0f ? sv[ch] : 1.0;
    live[ch] = sv[ch] != 0.0f ? 1.0 : 0.0;
  }
  const double lim = 127.0;
  for (int64_t j = 0; j < nk; j++) {
    for (int64_t ch = 0; ch < dv; ch++) {
      double r = std::nearbyint(static_cast<double>(v[j * dv + ch]) / sd[ch]);
      r = r > lim ? lim : r;
      r = r < -lim ? -lim : r;
      vc[j * dv + ch] = static_cast<int8_t>(static_cast<int32_t>(r * live[ch]));
    }
  }
  for (int64_t ch = 0; ch < dv; ch++)
    sv[ch] = static_cast<float>(static_cast<double>(sv[ch]) / 255.0);
  return true;
}

// Pass 3, (b, query head h): Q's scales and codes from its block means (zeros without smoothQ).
inline void sageQuantizeQ(const SageQuantizeCall& c, int64_t b, int64_t h, const float* qm,
                          const float* zeros, float* gmax, float* gvec) {
  const SageDims& z = c.z;
  const int64_t nq = z.nq, d = z.d;
  const float* q = c.q + (b * z.hq + h) * nq * d;
  const int qmax = c.qBits[h] == 8 ? 127 : 7;
  float* qs = c.qScale + (b * z.hq + h) * z.nQG;
  sageGroupMaxima(
      q, nq, d, [&](int64_t i) { return qm != nullptr ? qm + (i / kSageQBlock) * d : zeros; },
      [&](int64_t i) { return sageQGroup(i, z.granularity); }, z.nQG, gvec, gmax);
  for (int64_t g = 0; g < z.nQG; g++) qs[g] = sageScale(gmax[g], qmax);
  int8_t* qc = c.qCodes + (b * z.hq + h) * nq * d;
  for (int64_t i = 0; i < nq; i++)
    sageCodes(q + i * d, qm != nullptr ? qm + (i / kSageQBlock) * d : nullptr, d,
              qs[sageQGroup(i, z.granularity)], qmax, qc + i * d);
}

inline const char* sageQuantize(const SageQuantizeCall& c) {
  const SageDims& z = c.z;
  const int threads = poolThreads();
  // Per thread (floats): sum (2 d: d doubles), km (d), zeros (d), ks (8 d: the bias's 4 key rows
  // in doubles), gmax (nG = max(nKG, nQG)), gvec (nG V::L), w (2 d Mp: d Mp doubles), vrow
  // (4 dv: 2 dv doubles).
  const int64_t Mp = roundUp(z.group * z.nQB, 8), nG = std::max(z.nKG, z.nQG);
  const int64_t fSum = roundUp(2 * z.d, 16), fKm = roundUp(z.d, 16), fKs = 8 * z.d;
  const int64_t fG = roundUp(nG, 16), fGv = roundUp(nG * V::L, 16), fW = roundUp(2 * z.d * Mp, 16);
  const int64_t fV = roundUp(4 * z.dv, 16);
  const int64_t per = fSum + 2 * fKm + fKs + fG + fGv + fW + fV;
  const int64_t fQm = c.smoothQ ? roundUp(z.batch * z.hq * z.nQB * z.d, 16) : 0;
  SageBuffer buf(per * threads + fQm);
  if (!buf.ok()) return kOutOfMemory;
  float* scratchBase = buf.get();
  float* qmAll = scratchBase + per * threads;
  struct Scratch {
    double* sum;
    float *km, *zeros, *ks, *gmax, *gvec;
    double *w, *vrow;
  };
  auto scratchOf = [&](int thread) {
    float* base = scratchBase + per * thread;
    Scratch x;
    x.sum = reinterpret_cast<double*>(base);
    x.km = base + fSum;
    x.zeros = x.km + fKm;
    x.ks = x.zeros + fKm;
    x.gmax = x.ks + fKs;
    x.gvec = x.gmax + fG;
    x.w = reinterpret_cast<double*>(x.gvec + fGv);
    x.vrow = reinterpret_cast<double*>(x.gvec + fGv + fW);
    for (int64_t ch = 0; ch < z.d; ch++) x.zeros[ch] = 0.0f;
    return x;
  };
  int bad = 0;  // bit 0: q, 1: k, 2: v non-finite
  auto means = [&](int64_t t, int thread) {
    const Scratch x = scratchOf(thread);
    bool ok = true;
    if (c.smoothQ)
      ok = sageQMeans(c, t / z.hq, t % z.hq, x.sum, qmAll + t * z.nQB * z.d);
    else
      ok = sageAllFinite(c.q + t * z.nq * z.d, z.nq * z.d);
    if (!ok) __atomic_fetch_or(&bad, 1, __ATOMIC_RELAXED);
  };
  parallel(z.batch * z.hq, means);
  auto kv = [&](int64_t t, int thread) {
    const Scratch x = scratchOf(thread);
    bool vFinite = true;
    if (!sageQuantizeKv(c, t / z.hkv, t % z.hkv, qmAll, x.sum, x.km, x.ks, x.gmax, x.gvec, x.w,
                        x.vrow, &vFinite))
      __atomic_fetch_or(&bad, 2, __ATOMIC_RELAXED);
    if (!vFinite) __atomic_fetch_or(&bad, 4, __ATOMIC_RELAXED);
  };
  if (bad == 0) parallel(z.batch * z.hkv, kv);
  if (bad & 1) return kSageNonFiniteQ;
  if (bad & 2) return kSageNonFiniteK;
  if (bad & 4) return kSageNonFiniteV;
  auto qc = [&](int64_t t, int thread) {
    const Scratch x = scratchOf(thread);
    sageQuantizeQ(c, t / z.hq, t % z.hq, c.smoothQ ? qmAll + t * z.nQB * z.d : nullptr, x.zeros,
                  x.gmax, x.gvec);
  };
  parallel(z.batch * z.hq, qc);
  return nullptr;
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
