// Addressing, masking and tiling shared by the FlashAttention-2 forward and backward kernels:
// the same rules as packages/attention/src/spec.ts (qBase, kBase, lseBase, keyRange, blockKept).
#pragma once

#include <algorithm>
#include <cmath>
#include <new>
#include <vector>

#include "common_impl.h"

namespace attnkit {
namespace ATTNKIT_NS {

constexpr float kLog2e = 1.4426950408889634f;
constexpr double kLn2 = 0.6931471805599453;
constexpr float kLn2f = 0.6931471805599453f;

// LSE (natural units) of a row whose scores are in log2 units, from its max m2 and its sum
// l = sum 2^(s - m2): fl32(fl32(m2 ln 2) + ln l). The backward forms P = e^(fl32(s2 ln 2) - LSE)
// (flash_backward.h) from the same f32 product, so the row's max gets P = 1 exactly when the
// row is one-hot (l = 1) and P stays within the f32 rounding of LSE itself otherwise; a
// conversion of LSE back to log2 units (LSE log2 e) would lose |m2| 2^-24 instead, e.g.
// P = 0.7 instead of 1 at scores of 1e6.
inline float lseOf(float m2, double l) {
  const volatile float mn = m2 * kLn2f;  // rounded to f32, as bwdProb's product
  return static_cast<float>(static_cast<double>(mn) + std::log(l));
}

struct Seq {
  int64_t nq, nk;
  int64_t off;  // nk - nq: the bottom-right diagonal offset
  int64_t b;    // the batch entry (the HSTU mask's numTargets[b])
};

inline Seq seqOf(const AttnProblem& p, int64_t b) {
  Seq s{p.seqQ[b], p.seqK[b], 0, b};
  s.off = s.nk - s.nq;
  return s;
}

// Element offset of token 0 of (b, query head h) in q (width d) or o / dO (width dv).
inline int64_t qBase(const AttnProblem& p, int64_t b, int64_t h, int64_t width) {
  return p.thd ? (p.startQ[b] * p.hq + h) * width : (b * p.hq + h) * p.maxSeqQ * width;
}
inline int64_t kBase(const AttnProblem& p, int64_t b, int64_t h, int64_t width) {
  // Paged: token 0 of the pool, head h; key j is at keyRowOf(p, b, j) rows from it.
  if (p.blockTable != nullptr) return h * width;
  return p.thd ? (p.startK[b] * p.hkv + h) * width : (b * p.hkv + h) * p.maxSeqK * width;
}
inline int64_t lseBase(const AttnProblem& p, int64_t b, int64_t h) {
  return p.thd ? h * p.totalQ + p.startQ[b] : (b * p.hq + h) * p.maxSeqQ;
}
// Entry of token 0 of (b, kv head h) in the key index layout (engine.h permK).
inline int64_t kIdxBase(const AttnProblem& p, int64_t b, int64_t h) {
  return p.thd ? h * p.totalK + p.startK[b] : (b * p.hkv + h) * p.maxSeqK;
}
inline int64_t qRowStride(const AttnProblem& p, int64_t width) {
  return p.thd ? p.hq * width : width;
}
inline int64_t kRowStride(const AttnProblem& p, int64_t width) {
  return p.thd || p.blockTable != nullptr ? p.hkv * width : width;
}
// The stored row of key j of sequence b relative to kBase: j, or paged (engine.h blockTable)
// row j % pageSize of the page the block table gives for slot j / pageSize.
inline int64_t keyRowOf(const AttnProblem& p, int64_t b, int64_t j) {
  if (p.blockTable == nullptr) return j;
  const int64_t slot = j / p.pageSize;
  return static_cast<int64_t>(p.blockTable[b * p.maxPages + slot]) * p.pageSize + (j - slot * p.pageSize);
}

// Allowed keys of query row i: [lo, hi) from causal and window alone. Normative rule:
// packages/attention/src/spec.ts keyRange (lo = keyLo, hi = keyHi; off = nk - nq).
inline int64_t keyLo(const AttnProblem& p, const Seq& s, int64_t i) {
  return p.left < 0 ? 0 : imax(0, i + s.off - p.left);
}
inline int64_t keyHi(const AttnProblem& p, const Seq& s, int64_t i) {
  return p.right < 0 ? s.nk : imin(s.nk, i + s.off + p.right + 1);
}

inline const uint8_t* sparseBase(const AttnProblem& p, int64_t b, int64_t h) {
  return p.bsMask == nullptr ? nullptr : p.bsMask + b * p.bsBatchStride + h * p.bsHeadStride;
}

// The HSTU mask's rule for query i, key j of sequence b of length n (p.hstuTargets non-null):
// packages/skeleton/src/hooks.ts hstuMaskAllowed (= @attnkit/attention hstuAllowed), same
// integer arithmetic.
inline bool hstuAllowed(const AttnProblem& p, int64_t b, int64_t i, int64_t j, int64_t n) {
  const int64_t c = p.hstuContextual, m = p.hstuMaxAttnLen, f = p.hstuMinFull;
  const int64_t top = (c > 0 ? n - c + 1 : n) - p.hstuTargets[b];
  const int64_t r = imin(c > 0 ? imax(i - c + 1, 0) : i, top);
  const int64_t s = imin(c > 0 ? imax(j - c + 1, 0) : j, top);
  int64_t d = r - s;
  if (!p.hstuCausal && d < 0) d = -d;
  bool ok = i == j || d > 0;
  if (m > 0) ok = ok && (d <= m || (f > 0 && r >= top - f));
  if (c > 0) ok = ok || (r == 0 && s < top);
  return ok;
}

enum class Vis { kSkip, kFull, kPartial };

// Visibility of the tile rows [i0, i1) x keys [j0, j1) of one (b, h) under spec.ts `allowed`
// (band, then block mask; the mask mod is applied per element): kSkip when no pair is
// allowed (the tile is never computed), kFull when every pair is (no mask is applied).
inline Vis classifyTile(const AttnProblem& p, const Seq& s, const uint8_t* bs, int64_t i0,
                        int64_t i1, int64_t j0, int64_t j1) {
  // Rows whose window reaches the tile: lo_i <= j1 - 1 and hi_i > j0.
  const int64_t firstRow = p.right < 0 ? i0 : imax(i0, j0 - s.off - p.right);
  const int64_t endRow = p.left < 0 ? i1 : imin(i1, j1 - s.off + p.left);
  if (firstRow >= endRow) return Vis::kSkip;
  Vis vis = keyLo(p, s, i1 - 1) <= j0 && j1 <= keyHi(p, s, i0) ? Vis::kFull : Vis::kPartial;
  // HstuMaskHook (b): the band contains the HSTU mask; every tile it visits is tested per pair.
  if (p.hstuTargets != nullptr) vis = Vis::kPartial;
  if (bs != nullptr) {
    int64_t kept = 0, total = 0;
    for (int64_t qb = firstRow / p.bsBlockQ; qb <= (endRow - 1) / p.bsBlockQ; qb++) {
      for (int64_t kb = j0 / p.bsBlockK; kb <= (j1 - 1) / p.bsBlockK; kb++) {
        kept += bs[qb * p.bsNbk + kb] != 0;
        total++;
      }
    }
    if (kept == 0) return Vis::kSkip;
    if (kept != total) vis = Vis::kPartial;
  }
  return vis;
}

// End of the tile that starts at x along an axis split into tiles of at most `width`; with a
// block-sparse mask of block `block` along this axis, tiles never straddle a mask block (or
// cover whole mask blocks), so a masked block is skipped as a whole.
inline int64_t tileEnd(int64_t x, int64_t end, int64_t width, int64_t block) {
  if (block <= 0) return imin(end, x + width);
  if (block >= width) return imin(end, imin(x + width, (x / block + 1) * block));
  const int64_t w = width / block * block;
  return imin(end, (x / w + 1) * w);
}

// Runs K<R>::run(args...) for the row count R = rows in [1, MaxR].
template <template <int> class K, int R, class... A>
ATTNKIT_ALWAYS_INLINE void withRows(int64_t rows, A&&... a) {
  if constexpr (R == 1) {
    K<1>::run(a...);
  } else {
    if (rows == R)
      K<R>::run(a...);
    else
      withRows<K, R - 1>(rows, a...);
  }
}

// Work item of one (batch, head) with an estimated cost.
struct Task {
  int64_t b, h, x0, cost;
  int64_t group = 0, split = 0;  // forward split-K: the (b, h, query group) and key range
};

// Head by head, so that the threads share one head's K and V (or Q and dO) in L3 at a time;
// within a head the largest first, so the last tasks are short (causal rows differ by up to N).
inline void sortByCostPerHead(std::vector<Task>& tasks) {
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) {
    if (a.b != b.b) return a.b < b.b;
    if (a.h != b.h) return a.h < b.h;
    return a.cost > b.cost;
  });
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
