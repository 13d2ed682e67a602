// The policies the FlashAttention-2 forward and backward are templated on (the skeleton's hooks,
// packages/skeleton/src/hooks.ts): a normalize policy (Softmax, with optional per-head sinks, or
// a pointwise one: Sigmoid, Silu) and a score-mod policy (NoMods: the plain kernel's code path; Mods: the built-in mods
// of the problem, applied in order to each score tile after the scale). The tiling loops of
// flash_forward.h and flash_backward.h call into these; they hold no loops of their own over
// tiles. Scores are kept in log2 units (S * log2 e) by both kernels, so every mod parameter is
// converted here once per (batch, head).
#pragma once

#include <limits>
#include <type_traits>

#include "flash_common.h"

namespace attnkit {
namespace ATTNKIT_NS {

// Normalize policies. The pointwise ones (kPointwise: no row statistics, no LSE, weights final
// per tile, split-K partials plain sums) give `weight`: w at t = the score in log2 units (plus
// sigmoid's bias), and with deriv, dw/ds in natural units (the backward's dS = dP dw/ds). The
// kernels' code paths are shared; only this function differs. NaN scores give NaN (as the
// float64 reference); a masked score (-inf) weighs 0 with derivative 0.
struct Softmax {
  static constexpr bool kPointwise = false;
};
struct Sigmoid {
  static constexpr bool kPointwise = true;
  // w = sigmoid(t); dw/ds = w (1 - w).
  static ATTNKIT_ALWAYS_INLINE V weight(V t, V* deriv, float) {
    const V nan = V::set1(std::numeric_limits<float>::quiet_NaN());
    V wd;
    // sigmoid2v maps NaN to 0; the reference's sigmoid(NaN) is NaN.
    const V w = V::keep_in(sigmoid2v(t, deriv != nullptr ? &wd : nullptr), t, -kInf, kInf, nan);
    if (deriv != nullptr) *deriv = V::keep_in(wd, t, -kInf, kInf, nan);
    return w;
  }
};
struct Silu {
  static constexpr bool kPointwise = true;
  // w = c z sig(z), z = t ln 2; dw/ds = c sig(z) (1 + z sig(-z)). sig(z) and sig(-z) = 1 - sig(z)
  // from 2^-|t| (no overflow, no cancellation near 1).
  static ATTNKIT_ALWAYS_INLINE V weight(V t, V* deriv, float c) {
    const V nan = V::set1(std::numeric_limits<float>::quiet_NaN());
    const float lowest = std::numeric_limits<float>::lowest();
    const V e = exp2v(V::zero() - V::abs(t));
    const V inv = V::set1(1.0f) / (V::set1(1.0f) + e);
    const V low = e * inv;
    const V sg = V::keep_in(inv, t, 0.0f, kInf, low);
    const V z = t * V::set1(kLn2f);
    // -inf (masked) -> 0 (z sig(z) would be -inf * 0); then NaN -> NaN.
    const V w = V::keep_in(V::keep_in(V::set1(c) * z * sg, t, lowest, kInf, V::zero()), t, -kInf,
                           kInf, nan);
    if (deriv != nullptr) {
      const V sn = V::keep_in(low, t, 0.0f, kInf, inv);
      const V dw = V::set1(c) * sg * (V::set1(1.0f) + z * sn);
      *deriv = V::keep_in(V::keep_in(dw, t, lowest, kInf, V::zero()), t, -kInf, kInf, nan);
    }
    return w;
  }
};

// Score-mod policies.
struct NoMods {
  static constexpr bool kActive = false;
};
struct Mods {
  static constexpr bool kActive = true;
};

// The mods of one (batch, query head) in log2 units: softcap's cap and alibi's slope scaled by
// log2 e, the bias pointer advanced to (b, h) and its values scaled by log2 e as they are read.
struct HeadMods {
  int n = 0;
  bool softcap = false;  // the backward needs each softcap's derivative
  ScoreModKind kind[kMaxScoreMods];
  float x[kMaxScoreMods];  // softcap: cap * log2 e; alibi: slope_h * log2 e
  const float* bias[kMaxScoreMods];
  int64_t rowStride[kMaxScoreMods];
};

inline HeadMods headMods(const AttnProblem& p, int64_t b, int64_t h) {
  HeadMods m;
  m.n = p.numMods;
  for (int t = 0; t < p.numMods; t++) {
    const ScoreMod& s = p.mods[t];
    m.kind[t] = s.kind;
    m.x[t] = 0.0f;
    m.bias[t] = nullptr;
    m.rowStride[t] = 0;
    if (s.kind == ScoreModKind::kSoftcap) {
      m.x[t] = s.cap * kLog2e;
      m.softcap = true;
    } else if (s.kind == ScoreModKind::kAlibi) {
      m.x[t] = s.slopes[h] * kLog2e;
    } else {
      m.bias[t] = s.bias + b * s.batchStride + h * s.headStride;
      m.rowStride[t] = s.rowStride;
    }
  }
  return m;
}

// cap * tanh(x / cap) in place; with g, g *= 1 - tanh^2 (the derivative at the mod's input).
inline V softcapv(V x, float cap, float invCap, V* g) {
  if (g == nullptr) return V::set1(cap) * tanhv(x * V::set1(invCap));
  V deriv;
  const V t = tanhv(x * V::set1(invCap), &deriv);
  *g = *g * deriv;
  return V::set1(cap) * t;
}

// Forward: the mods on a score tile st [keys j0..j1) x [Bq lanes], lane i = query row
// i0 + i (rows valid lanes); diag[i] = i0 + i + Nk - Nq.
template <int64_t Bq, int NV>
inline void fwdMods(const HeadMods& m, int64_t i0, int64_t rows, const float* diag, int64_t j0,
                    int64_t j1, float* st) {
  for (int t = 0; t < m.n; t++) {
    if (m.kind[t] == ScoreModKind::kSoftcap) {
      const float cap = m.x[t], inv = 1.0f / m.x[t];
      for (int64_t j = j0; j < j1; j++) {
        float* row = st + (j - j0) * Bq;
        for (int v = 0; v < NV; v++)
          softcapv(V::load(row + v * V::L), cap, inv, nullptr).store(row + v * V::L);
      }
    } else if (m.kind[t] == ScoreModKind::kAlibi) {
      const V slope = V::set1(-m.x[t]);
      for (int64_t j = j0; j < j1; j++) {
        float* row = st + (j - j0) * Bq;
        const V vj = V::set1(static_cast<float>(j));
        for (int v = 0; v < NV; v++) {
          const V dist = V::abs(V::load(diag + v * V::L) - vj);
          V::fma(slope, dist, V::load(row + v * V::L)).store(row + v * V::L);
        }
      }
    } else {
      // Query rows run along the lanes here and the bias is row-major: each lane reads its
      // own bias row (contiguous over the keys).
      for (int64_t i = 0; i < rows; i++) {
        const float* br = m.bias[t] + (i0 + i) * m.rowStride[t];
        // One explicit fma, as bwdMods computes it: the backward recomputes S bit for bit.
        for (int64_t j = j0; j < j1; j++) {
          float& x = st[(j - j0) * Bq + i];
          x = std::fma(br[j], kLog2e, x);
        }
      }
    }
  }
}

// Backward: the mods on one score row x [Bk lanes] of query row i, lane jl = key j0 + jl
// (kcols valid lanes; jidx[jl] = j0 + jl); g (when the mods include a softcap) gets the
// product of the mods' derivatives at their inputs.
template <int NV>
inline void bwdMods(const HeadMods& m, int64_t i, int64_t off, int64_t j0, int64_t kcols,
                    const float* jidx, float* x, float* g) {
  if (g != nullptr)
    for (int v = 0; v < NV; v++) V::set1(1.0f).store(g + v * V::L);
  for (int t = 0; t < m.n; t++) {
    if (m.kind[t] == ScoreModKind::kSoftcap) {
      const float cap = m.x[t], inv = 1.0f / m.x[t];
      for (int v = 0; v < NV; v++) {
        if (g == nullptr) {
          softcapv(V::load(x + v * V::L), cap, inv, nullptr).store(x + v * V::L);
          continue;
        }
        V gv = V::load(g + v * V::L);
        softcapv(V::load(x + v * V::L), cap, inv, &gv).store(x + v * V::L);
        gv.store(g + v * V::L);
      }
    } else if (m.kind[t] == ScoreModKind::kAlibi) {
      const V slope = V::set1(-m.x[t]);
      const V diag = V::set1(static_cast<float>(i + off));
      for (int v = 0; v < NV; v++) {
        const V dist = V::abs(diag - V::load(jidx + v * V::L));
        V::fma(slope, dist, V::load(x + v * V::L)).store(x + v * V::L);
      }
    } else {
      const float* br = m.bias[t] + i * m.rowStride[t] + j0;
      int64_t jl = 0;
      for (; jl + V::L <= kcols && jl < NV * V::L; jl += V::L)
        V::fma(V::load(br + jl), V::set1(kLog2e), V::load(x + jl)).store(x + jl);
      for (; jl < kcols; jl++) x[jl] = std::fma(br[jl], kLog2e, x[jl]);
    }
  }
}

// HSTU's bucketed rab (engine.h AttnProblem.rabPos...). Its time column needs the last
// threshold <= |dt| per pair; instead of a binary search each pair starts from a lookup table
// indexed by |dt|'s octave and its next 4 bits (448 cells for |dt| < 2^31), holding the column
// of the cell's smallest integer, and steps up past the thresholds inside the cell: a fixed
// number of branch-free steps, the most thresholds any cell holds (rabSteps: 1 for the log
// buckets, whose width is 0.301 / ln 2 = 0.43 octave against a cell's 1/16; a few for sqrt's).
// A data-dependent loop instead mispredicted about every other pair. Integer arithmetic
// throughout: the column is the reference's exactly.
struct RabLut {
  static constexpr int kCells = 16 + 27 * 16;
  // Cell of a (0 <= a < 2^31): a itself below 16, else 16 cells per octave.
  static ATTNKIT_ALWAYS_INLINE int cell(uint32_t a) {
    if (a < 16) return static_cast<int>(a);
    const int e = 31 - __builtin_clz(a);
    return 16 + (e - 4) * 16 + static_cast<int>((a >> (e - 4)) & 15);
  }
  // The smallest integer of cell c.
  static int64_t low(int c) {
    if (c < 16) return c;
    const int e = (c - 16) / 16 + 4, sub = (c - 16) % 16;
    return static_cast<int64_t>(16 + sub) << (e - 4);
  }
  static int64_t column(const int32_t* thr, int64_t n, int64_t a) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
      const int64_t mid = (lo + hi + 1) / 2;
      if (thr[mid] <= a)
        lo = mid;
      else
        hi = mid - 1;
    }
    return lo;
  }
  // lut[c] = the column of low(c) (binary search, once per call); returns the steps: the most
  // columns by which a cell's largest integer exceeds its smallest.
  static int32_t build(const int32_t* thr, int64_t n, int32_t* lut) {
    int64_t steps = 0;
    for (int c = 0; c < kCells; c++) {
      lut[c] = static_cast<int32_t>(column(thr, n, low(c)));
      const int64_t last = c + 1 < kCells ? low(c + 1) - 1 : INT64_C(0x7fffffff);
      steps = imax(steps, column(thr, n, last) - lut[c]);
    }
    return static_cast<int32_t>(steps);
  }
};

// The rab of one (batch, query head): the tables' rows of head h (null = that term is absent),
// the sequence's key-axis times, and in the backward this thread's partial gradient rows.
struct RabHead {
  bool on = false;
  const float* pos = nullptr;
  const float* time = nullptr;
  int64_t numPos = 0, center = 0;
  const int32_t* keyTime = nullptr;   // key j of the sequence at keyTime[j]
  const int32_t* nextTime = nullptr;  // position i at nextTime[i]
  const int32_t* thr = nullptr;
  const int32_t* lut = nullptr;
  int64_t numThr = 0;
  int32_t steps = 0;
  double* dpos = nullptr;
  double* dtime = nullptr;

  ATTNKIT_ALWAYS_INLINE int64_t posCol(int64_t i, int64_t j) const {
    return imin(imax(j - i + center, 0), numPos - 1);
  }
  // The time column of |a - b| (a, b in [0, 2^31)).
  ATTNKIT_ALWAYS_INLINE int64_t timeCol(int32_t a, int32_t b) const {
    const int32_t dt = a > b ? a - b : b - a;
    int64_t c = lut[RabLut::cell(static_cast<uint32_t>(dt))];
    for (int32_t s = 0; s < steps; s++) {
      // Never past the last column (n = c there); thresholds are non-decreasing.
      const int64_t n = imin(c + 1, numThr - 1);
      c = thr[n] <= dt ? n : c;
    }
    return c;
  }
};

// Start of sequence b on the key axis (the index of the per-token times).
inline int64_t rabKeyStart(const AttnProblem& p, int64_t b) {
  return p.thd ? p.startK[b] : b * p.maxSeqK;
}

inline RabHead rabHead(const AttnProblem& p, int64_t b, int64_t h) {
  RabHead r;
  if (p.rabPos == nullptr && p.rabTime == nullptr) return r;
  r.on = true;
  if (p.rabPos != nullptr) {
    r.pos = p.rabPos + (p.rabPosHeads == 1 ? 0 : h) * p.rabNumPos;
    r.numPos = p.rabNumPos;
    r.center = (p.rabNumPos - 1) / 2;
  }
  if (p.rabTime != nullptr) {
    r.time = p.rabTime + (p.rabTimeHeads == 1 ? 0 : h) * p.rabNumTime;
    const int64_t s = rabKeyStart(p, b);
    r.keyTime = p.rabKeyTime + s;
    r.nextTime = p.rabNextTime + s;
    r.thr = p.rabThresholds;
    r.numThr = p.rabNumThresholds;
    r.lut = p.rabLut;
    r.steps = p.rabSteps;
  }
  return r;
}

// Doubles of one thread's partial rab gradients: the position table, then the time table.
inline int64_t rabGradDoubles(const AttnProblem& p) {
  int64_t n = 0;
  if (p.rabDPos != nullptr) n += p.rabPosHeads * p.rabNumPos;
  if (p.rabDTime != nullptr) n += p.rabTimeHeads * p.rabNumTime;
  return n;
}

// Points r's gradient rows at head h of one thread's partials (acc: rabGradDoubles of them).
inline void rabGradRows(const AttnProblem& p, int64_t h, double* acc, RabHead& r) {
  if (p.rabDPos != nullptr) {
    r.dpos = acc + (p.rabPosHeads == 1 ? 0 : h) * p.rabNumPos;
    acc += p.rabPosHeads * p.rabNumPos;
  }
  if (p.rabDTime != nullptr) r.dtime = acc + (p.rabTimeHeads == 1 ? 0 : h) * p.rabNumTime;
}

// Runs f(std::bool_constant<P>, std::bool_constant<T>) for which of the two terms r has, so
// the per-pair code carries no test of them.
template <class F>
ATTNKIT_ALWAYS_INLINE void rabTerms(const RabHead& r, F&& f) {
  if (r.pos != nullptr && r.time != nullptr)
    f(std::true_type{}, std::true_type{});
  else if (r.pos != nullptr)
    f(std::true_type{}, std::false_type{});
  else
    f(std::false_type{}, std::true_type{});
}

#if defined(ATTNKIT_ISA_AVX512)
// The time table's and the thresholds' entries in registers when every reachable column fits in
// eight (numThr <= 128: the log buckets reach 72), so that the lookups are two-source permutes
// (4 and 3 blends) instead of 16-element gathers, the costliest part of the rab.
struct RabRegs {
  bool on = false;
  __m512 time[8];
  __m512i thr[8];
};
inline void rabRegs(const RabHead& r, RabRegs& g) {
  g.on = r.time != nullptr && r.numThr <= 128;
  if (!g.on) return;
  for (int k = 0; k < 8; k++) {
    const int64_t n = imax(0, imin(16, r.numThr - 16 * k));
    const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
    // Columns past numThr are never read; a threshold there is never <= |dt|.
    g.time[k] = n > 0 ? _mm512_maskz_loadu_ps(m, r.time + 16 * k) : _mm512_setzero_ps();
    g.thr[k] = n > 0 ? _mm512_mask_loadu_epi32(_mm512_set1_epi32(0x7fffffff), m, r.thr + 16 * k)
                     : _mm512_set1_epi32(0x7fffffff);
  }
}
// t[idx] for idx in [0, 128), t in 8 registers of 16.
ATTNKIT_ALWAYS_INLINE __m512i rabPermute(const __m512i* t, __m512i idx) {
  const __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
  const __mmask16 b6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
  const __m512i lo = _mm512_mask_blend_epi32(b5, _mm512_permutex2var_epi32(t[0], idx, t[1]),
                                             _mm512_permutex2var_epi32(t[2], idx, t[3]));
  const __m512i hi = _mm512_mask_blend_epi32(b5, _mm512_permutex2var_epi32(t[4], idx, t[5]),
                                             _mm512_permutex2var_epi32(t[6], idx, t[7]));
  return _mm512_mask_blend_epi32(b6, lo, hi);
}
ATTNKIT_ALWAYS_INLINE __m512 rabPermute(const __m512* t, __m512i idx) {
  const __mmask16 b5 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(32));
  const __mmask16 b6 = _mm512_test_epi32_mask(idx, _mm512_set1_epi32(64));
  const __m512 lo = _mm512_mask_blend_ps(b5, _mm512_permutex2var_ps(t[0], idx, t[1]),
                                         _mm512_permutex2var_ps(t[2], idx, t[3]));
  const __m512 hi = _mm512_mask_blend_ps(b5, _mm512_permutex2var_ps(t[4], idx, t[5]),
                                         _mm512_permutex2var_ps(t[6], idx, t[7]));
  return _mm512_mask_blend_ps(b6, lo, hi);
}
#else
struct RabRegs {
  bool on = false;
};
inline void rabRegs(const RabHead&, RabRegs&) {}
#endif

// n lanes (n <= V::L) of one row of pairs: lane l's pair has |dt| = |t[l] - t0| and position
// column clamp(c0 + step l, 0, numPos - 1); x[l] = fma(pos + time, log2 e, x[l]) (the f32 sum
// and the fma of every rab path), and with tcol the time columns are kept there. A whole
// vector (n = V::L) runs on the ISA's integer lanes, with gathers (or RabRegs' permutes): the
// same cells, table and steps as RabHead::timeCol, so the same columns; the rest pair by pair.
template <bool kPos, bool kTime>
ATTNKIT_ALWAYS_INLINE void rabLanes(const RabHead& r, const RabRegs& rg, int64_t n, int64_t c0,
                                    int step, const int32_t* t, int32_t t0, float* x,
                                    int32_t* tcol) {
#if defined(ATTNKIT_ISA_AVX512)
  if (n == V::L) {
    __m512 v = _mm512_setzero_ps();
    // The position columns are one contiguous slice (forward: walked backwards) unless clamped.
    const int64_t lo = step > 0 ? c0 : c0 - (V::L - 1), hi = lo + V::L - 1;
    if (kPos && lo >= 0 && hi < r.numPos) {
      v = _mm512_loadu_ps(r.pos + lo);
      if (step < 0)
        v = _mm512_permutexvar_ps(
            _mm512_set_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), v);
    } else if constexpr (kPos) {
      const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
      __m512i pc = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int32_t>(c0)),
                                    _mm512_mullo_epi32(lane, _mm512_set1_epi32(step)));
      pc = _mm512_min_epi32(_mm512_max_epi32(pc, _mm512_setzero_si512()),
                            _mm512_set1_epi32(static_cast<int32_t>(r.numPos - 1)));
      v = _mm512_i32gather_ps(pc, r.pos, 4);
    }
    if constexpr (kTime) {
      const __m512i dt = _mm512_abs_epi32(
          _mm512_sub_epi32(_mm512_loadu_si512(t), _mm512_set1_epi32(t0)));
      const __m512i one = _mm512_set1_epi32(1);
      // The octave from the f32 conversion's exponent, one lower where rounding reached the next
      // power of two; cells below 16 are |dt| itself.
      __m512i e = _mm512_sub_epi32(
          _mm512_srli_epi32(_mm512_castps_si512(_mm512_cvtepi32_ps(dt)), 23), _mm512_set1_epi32(127));
      e = _mm512_mask_sub_epi32(e, _mm512_cmpgt_epi32_mask(_mm512_sllv_epi32(one, e), dt), e, one);
      const __m512i sh = _mm512_max_epi32(_mm512_sub_epi32(e, _mm512_set1_epi32(4)),
                                          _mm512_setzero_si512());
      __m512i cell = _mm512_add_epi32(
          _mm512_add_epi32(_mm512_set1_epi32(16), _mm512_slli_epi32(sh, 4)),
          _mm512_and_si512(_mm512_srlv_epi32(dt, sh), _mm512_set1_epi32(15)));
      cell = _mm512_mask_mov_epi32(cell, _mm512_cmplt_epi32_mask(dt, _mm512_set1_epi32(16)), dt);
      __m512i c = _mm512_i32gather_epi32(cell, r.lut, 4);
      const __m512i last = _mm512_set1_epi32(static_cast<int32_t>(r.numThr - 1));
      for (int32_t s = 0; s < r.steps; s++) {
        const __m512i nx = _mm512_min_epi32(_mm512_add_epi32(c, one), last);
        const __m512i th = rg.on ? rabPermute(rg.thr, nx) : _mm512_i32gather_epi32(nx, r.thr, 4);
        c = _mm512_mask_mov_epi32(c, _mm512_cmple_epi32_mask(th, dt), nx);
      }
      if (tcol != nullptr) _mm512_storeu_si512(tcol, c);
      v = _mm512_add_ps(v, rg.on ? rabPermute(rg.time, c) : _mm512_i32gather_ps(c, r.time, 4));
    }
    _mm512_storeu_ps(x, _mm512_fmadd_ps(v, _mm512_set1_ps(kLog2e), _mm512_loadu_ps(x)));
    return;
  }
#elif defined(ATTNKIT_ISA_AVX2)
  if (n == V::L) {
    __m256 v = _mm256_setzero_ps();
    const int64_t lo = step > 0 ? c0 : c0 - (V::L - 1), hi = lo + V::L - 1;
    if (kPos && lo >= 0 && hi < r.numPos) {
      v = _mm256_loadu_ps(r.pos + lo);
      if (step < 0) v = _mm256_permutevar8x32_ps(v, _mm256_set_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    } else if constexpr (kPos) {
      const __m256i lane = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
      __m256i pc = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(c0)),
                                    _mm256_mullo_epi32(lane, _mm256_set1_epi32(step)));
      pc = _mm256_min_epi32(_mm256_max_epi32(pc, _mm256_setzero_si256()),
                            _mm256_set1_epi32(static_cast<int32_t>(r.numPos - 1)));
      v = _mm256_i32gather_ps(r.pos, pc, 4);
    }
    if constexpr (kTime) {
      const __m256i dt = _mm256_abs_epi32(_mm256_sub_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(t)), _mm256_set1_epi32(t0)));
      const __m256i one = _mm256_set1_epi32(1);
      __m256i e = _mm256_sub_epi32(
          _mm256_srli_epi32(_mm256_castps_si256(_mm256_cvtepi32_ps(dt)), 23), _mm256_set1_epi32(127));
      e = _mm256_add_epi32(e, _mm256_cmpgt_epi32(_mm256_sllv_epi32(one, e), dt));  // -1 where over
      const __m256i sh = _mm256_max_epi32(_mm256_sub_epi32(e, _mm256_set1_epi32(4)),
                                          _mm256_setzero_si256());
      __m256i cell = _mm256_add_epi32(
          _mm256_add_epi32(_mm256_set1_epi32(16), _mm256_slli_epi32(sh, 4)),
          _mm256_and_si256(_mm256_srlv_epi32(dt, sh), _mm256_set1_epi32(15)));
      cell = _mm256_blendv_epi8(cell, dt, _mm256_cmpgt_epi32(_mm256_set1_epi32(16), dt));
      __m256i c = _mm256_i32gather_epi32(r.lut, cell, 4);
      const __m256i last = _mm256_set1_epi32(static_cast<int32_t>(r.numThr - 1));
      for (int32_t s = 0; s < r.steps; s++) {
        const __m256i nx = _mm256_min_epi32(_mm256_add_epi32(c, one), last);
        const __m256i th = _mm256_i32gather_epi32(r.thr, nx, 4);
        c = _mm256_blendv_epi8(nx, c, _mm256_cmpgt_epi32(th, dt));
      }
      if (tcol != nullptr) _mm256_storeu_si256(reinterpret_cast<__m256i*>(tcol), c);
      v = _mm256_add_ps(v, _mm256_i32gather_ps(r.time, c, 4));
    }
    _mm256_storeu_ps(x, _mm256_fmadd_ps(v, _mm256_set1_ps(kLog2e), _mm256_loadu_ps(x)));
    return;
  }
#endif
  for (int64_t l = 0; l < n; l++) {
    float v = 0.0f;
    if constexpr (kPos) v += r.pos[imin(imax(c0 + step * l, 0), r.numPos - 1)];
    if constexpr (kTime) {
      const int64_t tc = r.timeCol(t[l], t0);
      if (tcol != nullptr) tcol[l] = static_cast<int32_t>(tc);
      v += r.time[tc];
    }
    x[l] = std::fma(v, kLog2e, x[l]);
  }
}

// Forward: the rab on a score tile st [keys j0..j1) x [Bq lanes] (lane i = query row i0 + i,
// position i0 + i + off; rows valid lanes), in log2 units as fwdMods' bias: x = fma(pos + time,
// log2 e, x), the f32 sum and the fma bwdRab repeats, so the backward recomputes S bit for bit.
template <int64_t Bq>
ATTNKIT_NOINLINE void fwdRab(const RabHead& r, int64_t i0, int64_t rows, int64_t off, int64_t j0,
                             int64_t j1, float* st) {
  rabTerms(r, [&](auto hasPos, auto hasTime) {
    constexpr bool kPos = decltype(hasPos)::value, kTime = decltype(hasTime)::value;
    alignas(64) int32_t next[Bq];
    RabRegs rg;
    if constexpr (kTime) {
      rabRegs(r, rg);
      for (int64_t i = 0; i < rows; i++) next[i] = r.nextTime[i0 + i + off];
    }
    for (int64_t j = j0; j < j1; j++) {
      float* row = st + (j - j0) * Bq;
      // Lane i reads position column j - (i0 + off + i) + center: one slice, walked backwards.
      const int64_t c0 = j - i0 - off + r.center;
      const int32_t kt = kTime ? r.keyTime[j] : 0;
      for (int64_t i = 0; i < rows; i += V::L)
        rabLanes<kPos, kTime>(r, rg, imin(V::L, rows - i), c0 - i, -1, next + i, kt, row + i,
                              nullptr);
    }
  });
}

// Backward: the rab on the score rows x (row stride ldx) of query positions qi0 + [0, nr), lanes
// = keys j0 + [0, kcols); with tcol (same strides), the time columns are kept for bwdRabGrad.
ATTNKIT_NOINLINE inline void bwdRab(const RabHead& r, int64_t qi0, int64_t nr, int64_t j0,
                                    int64_t kcols, float* x, int32_t* tcol, int64_t ldx) {
  rabTerms(r, [&](auto hasPos, auto hasTime) {
    constexpr bool kPos = decltype(hasPos)::value, kTime = decltype(hasTime)::value;
    RabRegs rg;
    if constexpr (kTime) rabRegs(r, rg);
    const int32_t* kt = kTime ? r.keyTime + j0 : nullptr;
    for (int64_t i = 0; i < nr; i++) {
      const int64_t qi = qi0 + i;
      const int64_t c0 = j0 - qi + r.center;
      const int32_t next = kTime ? r.nextTime[qi] : 0;
      float* xr = x + i * ldx;
      int32_t* tr = tcol != nullptr ? tcol + i * ldx : nullptr;
      for (int64_t jl = 0; jl < kcols; jl += V::L)
        rabLanes<kPos, kTime>(r, rg, imin(V::L, kcols - jl), c0 + jl, 1,
                              kTime ? kt + jl : nullptr, next, xr + jl,
                              tr != nullptr ? tr + jl : nullptr);
    }
  });
}

// Backward: dZ of one row (ds, 0 at masked pairs) summed into the thread's gradient rows (tcol:
// the row's time columns from bwdRab). Equal neighbouring time columns (the usual case: the
// keys of a time-sorted sequence) are summed in a register before their one store.
ATTNKIT_NOINLINE inline void bwdRabGrad(const RabHead& r, int64_t qi, int64_t j0, int64_t kcols,
                                        const float* ds, const int32_t* tcol) {
  if (r.dpos != nullptr) {
    // Lanes [0, a) clamp to column 0, [b, kcols) to numPos - 1, [a, b) are the contiguous
    // columns c0 + jl (a loop the compiler vectorises).
    const int64_t c0 = j0 - qi + r.center;
    const int64_t a = imin(imax(-c0, 0), kcols), b = imax(imin(r.numPos - 1 - c0, kcols), a);
    double first = 0.0, last = 0.0;
    for (int64_t jl = 0; jl < a; jl++) first += ds[jl];
    for (int64_t jl = a; jl < b; jl++) r.dpos[c0 + jl] += ds[jl];
    for (int64_t jl = b; jl < kcols; jl++) last += ds[jl];
    if (a > 0) r.dpos[0] += first;
    if (b < kcols) r.dpos[r.numPos - 1] += last;
  }
  if (r.dtime != nullptr && kcols > 0) {
    int32_t cur = tcol[0];
    double run = 0.0;
    for (int64_t jl = 0; jl < kcols; jl++) {
      if (tcol[jl] != cur) {
        r.dtime[cur] += run;
        cur = tcol[jl];
        run = 0.0;
      }
      run += ds[jl];
    }
    r.dtime[cur] += run;
  }
}

// The per-call setup of the rab: a copy of p with rabLut pointing at `lut` (and rabSteps) when
// the problem has a time table (on the kernel's stack: no standard container, see
// common_impl.h Floats).
struct RabLutStore {
  int32_t v[RabLut::kCells];
};
inline AttnProblem withRabLut(const AttnProblem& p, RabLutStore& lut) {
  AttnProblem q = p;
  q.rabLut = nullptr;
  q.rabSteps = 0;
  if (p.rabTime != nullptr) {
    q.rabSteps = RabLut::build(p.rabThresholds, p.rabNumThresholds, lut.v);
    q.rabLut = lut.v;
  }
  return q;
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
