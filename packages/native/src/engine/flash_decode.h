// Decode forward (issue 12, LeanAttention decode): a few query rows per sequence (nq <=
// kDecMaxRows), plain softmax over the band (causal / window), optional sinks, or a pointwise
// weight (sigmoid attention, HSTU's silu: no row statistics, partials plain sums). The FA2 forward
// (flash_forward.h) puts kFwdBq = 64 query rows in the SIMD lanes, so one decode row wastes 63
// of them, and every query head of a GQA group reads the same K and V again. Here one task is
// one (b, kv head) and a contiguous range of its keys: its R = group * nq rows (the query heads
// sharing the kv head, each with its nq rows; row r = head (r / nq), query r % nq) read each
// key once. Scores are dot products with d in the lanes (16 keys at a time for a single row, 4
// keys x 4 rows for a block of a group), their sums reduced together (hsums); the online
// softmax runs with keys in the lanes, and P V accumulates with dv in the lanes. K and V are
// read in place. Long bands with few (b, kv head) pairs are cut into contiguous key splits
// (FlashDecoding), merged by the associative combine of split-K
// (flash_forward.h fwdCombineTask) and finished as fwdFinish.
#pragma once

#include "stream_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "flash_hooks.h"

namespace attnkit {
namespace ATTNKIT_NS {

constexpr int64_t kDecMaxRows = 4;
// Keys per tile: the scores of one tile (R x kDecTile floats) and its V rows stay in L1.
constexpr int64_t kDecTile = 64;
#ifndef ATTNKIT_DEC_AHEAD
#define ATTNKIT_DEC_AHEAD 2
#endif
// Tiles of K / V the decode loop prefetches ahead of the one it computes.
constexpr int64_t kDecAhead = ATTNKIT_DEC_AHEAD;
static_assert(kDecAhead >= 1, "the decode loop prefetches at least the next tile");
static_assert(kDecTile % V::L == 0, "decode tiles are whole vectors");

// Whether the problem takes the decode path: any normalisation (softmax, sigmoid, silu) without
// score mods, block-sparse mask, permutation, HSTU mask or rab, and at most kDecMaxRows query
// rows in every sequence.
inline bool decodeEligible(const AttnProblem& p, const FlashForwardArgs& a) {
  if (p.numMods > 0 || p.bsMask != nullptr ||
      a.permQ != nullptr || a.permK != nullptr || p.hstuTargets != nullptr ||
      p.rabPos != nullptr || p.rabTime != nullptr || p.batch <= 0 || p.d <= 0 || p.dv <= 0)
    return false;
  for (int64_t b = 0; b < p.batch; b++)
    if (p.seqQ[b] > kDecMaxRows) return false;
  return true;
}

// out[i] = the sum of x[i]'s lanes (i < N): for N a multiple of 4, one transposing add tree
// (AVX-512: within 128-bit blocks by unpacks, then across blocks by block shuffles; AVX2: hadd)
// instead of N horizontal sums, each a serial chain of shuffles and adds that together cost a
// third of a cache-resident decode's time.
template <int N>
ATTNKIT_ALWAYS_INLINE void hsums(const V* x, float* out) {
#if defined(ATTNKIT_ISA_AVX512)
  if constexpr (N % 4 == 0) {
    __m512 e[N / 4];
    for (int g = 0; g < N / 4; g++) {
      const __m512 a = x[4 * g].v, b = x[4 * g + 1].v, c = x[4 * g + 2].v, d = x[4 * g + 3].v;
      // Per 128-bit block: [a0+a2, b0+b2, a1+a3, b1+b3], then [sum a, sum b, sum c, sum d].
      const __m512d ab = _mm512_castps_pd(
          _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b)));
      const __m512d cd = _mm512_castps_pd(
          _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d)));
      e[g] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(ab, cd)),
                           _mm512_castpd_ps(_mm512_unpackhi_pd(ab, cd)));
    }
    if constexpr (N == 16) {
      // Blocks [e0 b0+b1, e0 b2+b3, e1 b0+b1, e1 b2+b3], then every block a whole sum:
      // lane 4 g + j = the sum of x[4 g + j].
      const __m512 f = _mm512_add_ps(_mm512_shuffle_f32x4(e[0], e[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f32x4(e[0], e[1], _MM_SHUFFLE(3, 1, 3, 1)));
      const __m512 h = _mm512_add_ps(_mm512_shuffle_f32x4(e[2], e[3], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_f32x4(e[2], e[3], _MM_SHUFFLE(3, 1, 3, 1)));
      _mm512_storeu_ps(out, _mm512_add_ps(_mm512_shuffle_f32x4(f, h, _MM_SHUFFLE(2, 0, 2, 0)),
                                          _mm512_shuffle_f32x4(f, h, _MM_SHUFFLE(3, 1, 3, 1))));
    } else {
      for (int g = 0; g < N / 4; g++) {
        const __m256 s = _mm256_add_ps(_mm512_castps512_ps256(e[g]), _mm512_extractf32x8_ps(e[g], 1));
        _mm_storeu_ps(out + 4 * g,
                      _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
      }
    }
    return;
  }
#elif defined(ATTNKIT_ISA_AVX2)
  if constexpr (N % 4 == 0) {
    for (int g = 0; g < N / 4; g++) {
      const __m256 s = _mm256_hadd_ps(_mm256_hadd_ps(x[4 * g].v, x[4 * g + 1].v),
                                      _mm256_hadd_ps(x[4 * g + 2].v, x[4 * g + 3].v));
      _mm_storeu_ps(out + 4 * g,
                    _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
    }
    return;
  }
#endif
  for (int i = 0; i < N; i++) out[i] = V::hsum(x[i]);
}

// st[r][jj + t] = qs[r] . k[jj + t] (t < T) for rows [r0, r0 + RB): RB x T independent FMA
// chains over d, so each chunk of the T key rows is loaded once for RB query rows (a GQA group's
// rows share the keys; one row at a time reloaded every key chunk per row, 1.25 loads per FMA
// instead of (RB + T) / (RB T)), and the RB x T sums reduced together (hsums).
template <int T, int RB>
struct DecScores {
  static ATTNKIT_ALWAYS_INLINE void run(int64_t r0, int64_t d, const float* qs, const float* k,
                                        int64_t kRow, float* st) {
    V acc[RB][T];
    for (int r = 0; r < RB; r++)
      for (int t = 0; t < T; t++) acc[r][t] = V::zero();
    const float* q = qs + r0 * d;
    int64_t c = 0;
    for (; c + V::L <= d; c += V::L) {
      V kx[T];
      for (int t = 0; t < T; t++) kx[t] = V::load(k + t * kRow + c);
      for (int r = 0; r < RB; r++) {
        const V x = V::load(q + r * d + c);
        for (int t = 0; t < T; t++) acc[r][t] = V::fma(x, kx[t], acc[r][t]);
      }
    }
    float s[RB * T];
    hsums<RB * T>(&acc[0][0], s);
    for (int r = 0; r < RB; r++)
      for (int t = 0; t < T; t++)
        for (int64_t cc = c; cc < d; cc++) s[r * T + t] += q[r * d + cc] * k[t * kRow + cc];
    for (int r = 0; r < RB; r++) std::memcpy(st + (r0 + r) * kDecTile, s + r * T, sizeof(float) * T);
  }
};

// Every row of a tile's key group: blocks of 4 rows, then the rest one at a time. T = 16 keys:
// a 4-row block takes them 4 at a time (16 accumulators), a single row all 16 at once.
template <int T>
ATTNKIT_ALWAYS_INLINE void decScoresRows(int64_t rows, int64_t d, const float* qs,
                                                const float* k, int64_t kRow, float* st) {
  int64_t r = 0;
  constexpr int TB = T > 4 ? 4 : T;
  for (; r + 4 <= rows; r += 4)
    for (int t = 0; t < T; t += TB) DecScores<TB, 4>::run(r, d, qs, k + t * kRow, kRow, st + t);
  for (; r < rows; r++) DecScores<T, 1>::run(r, d, qs, k, kRow, st);
}

// O[r][c0 .. c0 + CV L) = alpha_r O[r] + sum_j P[r][j] V[j] for RB rows (RB x CV accumulators).
template <int CV>
struct DecPV {
  template <int RB>
  struct K {
    static ATTNKIT_ALWAYS_INLINE void run(int64_t nkeys, const float* pt, const float* v,
                                          int64_t vRow, float* o, int64_t dv,
                                          const float* alpha) {
      V acc[RB][CV];
      for (int r = 0; r < RB; r++)
        for (int u = 0; u < CV; u++)
          acc[r][u] = V::set1(alpha[r]) * V::load(o + r * dv + u * V::L);
      for (int64_t j = 0; j < nkeys; j++) {
        V x[CV];
        for (int u = 0; u < CV; u++) x[u] = V::load(v + j * vRow + u * V::L);
        for (int r = 0; r < RB; r++) {
          const V pj = V::set1(pt[r * kDecTile + j]);
          for (int u = 0; u < CV; u++) acc[r][u] = V::fma(pj, x[u], acc[r][u]);
        }
      }
      for (int r = 0; r < RB; r++)
        for (int u = 0; u < CV; u++) acc[r][u].store(o + r * dv + u * V::L);
    }
  };
};

// Software prefetch of `n` rows of `width` floats `stride` apart into L2: K and V kDecAhead
// tiles ahead (K before this tile's scores, V before its P V). One core's hardware prefetchers
// keep too few lines in flight to stream K and V at the memory's rate; two tiles of 2 x 32 KiB
// (d = dv = 128, 64 keys) requested ahead fit in L2 beside this tile.
ATTNKIT_ALWAYS_INLINE void decPrefetch(const float* x, int64_t n, int64_t width, int64_t stride) {
  for (int64_t j = 0; j < n; j++)
    for (int64_t c = 0; c < width; c += 16) __builtin_prefetch(x + j * stride + c, 0, 2);
}

// One key tile [j0, j1) of a (b, kv head) task: scores, band mask, online softmax (or the
// pointwise weight Norm::weight(s + bias2), alpha 1), P V.
// qs: R x d pre-scaled queries; o: R x dv, m, l: R (the partial state); st: R x kDecTile;
// alpha: R (each row's rescale factor of this tile); bias2, factor: the pointwise weight's.
template <class Norm>
ATTNKIT_ALIGN64 ATTNKIT_NOINLINE inline void decTile(const AttnProblem& p, const Seq& s, int64_t rows, int64_t nq,
                              const float* qs, const float* k, int64_t kRow, const float* v,
                              int64_t vRow, int64_t j0, int64_t j1, float* st, float* alpha,
                              float* o, float* m, float* l, float bias2, float factor,
                              int64_t nextKeys = 0, const float* kNext = nullptr,
                              const float* vNext = nullptr) {
  const int64_t nkeys = j1 - j0, d = p.d, dv = p.dv;
  // kNext / vNext: the nextKeys rows to prefetch, kDecAhead tiles on (contiguous K / V; none on
  // the paged path).
  if (nextKeys > 0) decPrefetch(kNext, nextKeys, d, kRow);
  int64_t t = 0;
  for (; t + 16 <= nkeys; t += 16) decScoresRows<16>(rows, d, qs, k + t * kRow, kRow, st + t);
  for (; t + 4 <= nkeys; t += 4) decScoresRows<4>(rows, d, qs, k + t * kRow, kRow, st + t);
  for (; t < nkeys; t++) decScoresRows<1>(rows, d, qs, k + t * kRow, kRow, st + t);
  const int64_t nv = (nkeys + V::L - 1) / V::L;
  float buf[V::L];
  bool partialV = false;
  for (int64_t r = 0; r < rows; r++) {
    const int64_t i = r % nq;
    // The band: keys outside [keyLo, keyHi) of row i (and the padding to whole vectors) are -inf.
    const int64_t lo = keyLo(p, s, i) - j0, hi = keyHi(p, s, i) - j0;
    float* row = st + r * kDecTile;
    if (lo > 0 || hi < nkeys) partialV = true;
    // A whole tile inside the row's band (every tile but the band's edges) masks nothing.
    if (lo > 0 || hi < nv * V::L || nkeys < nv * V::L)
      for (int64_t jj = 0; jj < nv * V::L; jj++)
        if (jj < lo || jj >= hi || jj >= nkeys) row[jj] = -kInf;
    if constexpr (Norm::kPointwise) {
      // Final weights at once (a masked -inf weighs 0, NaN stays NaN); nothing to rescale.
      const V b = V::set1(bias2);
      for (int64_t u = 0; u < nv; u++)
        Norm::weight(V::load(row + u * V::L) + b, nullptr, factor).store(row + u * V::L);
      alpha[r] = 1.0f;
      continue;
    }
    V mx = V::set1(m[r]), tot = V::zero();
    for (int64_t u = 0; u < nv; u++) {
      const V x = V::load(row + u * V::L);
      mx = V::max(mx, x);
      // As fwdSoftmax: the plain sum is NaN iff a score is NaN (or +inf meets -inf).
      tot = tot + x;
    }
    mx.store(buf);
    float top = m[r];
    for (int u = 0; u < V::L; u++) top = std::max(top, buf[u]);
    const float safe = top >= -3.0e38f && top <= 3.0e38f ? top : 0.0f;
    exp2v(V::set1(m[r] - safe)).store(buf);
    const float a = buf[0];
    V sum = V::zero();
    const V sv = V::set1(safe);
    for (int64_t u = 0; u < nv; u++) {
      const V e = exp2v(V::load(row + u * V::L) - sv);
      sum = sum + e;
      e.store(row + u * V::L);
    }
    l[r] = l[r] * a + V::hsum(sum);
    m[r] = top;
    const float nan = V::hsum(tot);
    // A NaN score, or a +inf one, poisons the row (fwdSoftmax): l = NaN stays NaN.
    if (nan != nan || top == kInf) l[r] = std::numeric_limits<float>::quiet_NaN();
    alpha[r] = a;
  }
  // A non-finite V row of a key outside some row's band would give that row 0 * NaN = NaN in
  // the dense product (the reference sums allowed keys only): such tiles run row by row over
  // each row's own keys.
  if (nextKeys > 0) decPrefetch(vNext, nextKeys, dv, vRow);
  float fin = 0.0f;
  if (partialV)
    for (int64_t j = 0; j < nkeys; j++)
      for (int64_t c = 0; c < dv; c++) fin += v[j * vRow + c] * 0.0f;
  if (fin != 0.0f) {
    for (int64_t r = 0; r < rows; r++) {
      const int64_t i = r % nq;
      const int64_t lo = imax(0, keyLo(p, s, i) - j0), hi = imin(nkeys, keyHi(p, s, i) - j0);
      float* orow = o + r * dv;
      for (int64_t c = 0; c < dv; c++) orow[c] *= alpha[r];
      for (int64_t jj = lo; jj < hi; jj++) {
        const float w = st[r * kDecTile + jj];
        for (int64_t c = 0; c < dv; c++) orow[c] += w * v[jj * vRow + c];
      }
    }
    return;
  }
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {
    const int64_t rb = imin(4, rows - r0);
    const float* al = alpha + r0;
    const float* pt = st + r0 * kDecTile;
    float* orow = o + r0 * dv;
    int64_t c = 0;
    for (; c + 4 * V::L <= dv; c += 4 * V::L)
      withRows<DecPV<4>::template K, 4>(rb, nkeys, pt, v + c, vRow, orow + c, dv, al);
    for (; c + V::L <= dv; c += V::L)
      withRows<DecPV<1>::template K, 4>(rb, nkeys, pt, v + c, vRow, orow + c, dv, al);
    for (; c < dv; c++)
      for (int64_t r = 0; r < rb; r++) {
        float acc = orow[r * dv + c] * al[r];
        for (int64_t j = 0; j < nkeys; j++) acc += pt[r * kDecTile + j] * v[j * vRow + c];
        orow[r * dv + c] = acc;
      }
  }
}

// One decode task: (b, kv head) and its keys [ja, jb) into the partial slot `part`
// (R x dv unnormalised O, then m and l, R each; pointwise: O alone is read).
template <class Norm>
inline void decTask(const AttnProblem& p, const FlashForwardArgs& a, int64_t b, int64_t kvh,
                    int64_t ja, int64_t jb, float* scratch, float* part) {
  const Seq s = seqOf(p, b);
  const int64_t nq = s.nq, rows = p.group * nq, d = p.d, dv = p.dv;
  float* o = part;
  float* m = o + rows * dv;
  float* l = m + rows;
  float* qs = scratch;
  float* st = qs + rows * d;
  float* alpha = st + rows * kDecTile;
  const float qScale = p.scale * kLog2e;  // scores in log2 units, as fwdStart
  // The pointwise weight's constants, as fwdGroup: sigmoid's b (log2 units), silu's c.
  const float bias2 = std::is_same_v<Norm, Sigmoid> ? p.sigmoidBias[b] * kLog2e : 0.0f;
  const float factor = p.siluFactor;
  const int64_t qRow = qRowStride(p, d);
  for (int64_t r = 0; r < rows; r++) {
    const int64_t h = kvh * p.group + r / nq, i = r % nq;
    const float* q = a.q + qBase(p, b, h, d) + i * qRow;
    for (int64_t c = 0; c < d; c++) qs[r * d + c] = q[c] * qScale;
    for (int64_t c = 0; c < dv; c++) o[r * dv + c] = 0.0f;
    m[r] = -kInf;
    l[r] = 0.0f;
  }
  const int64_t kRow = kRowStride(p, d), vRow = kRowStride(p, dv);
  const float* k = a.k + kBase(p, b, kvh, d);
  const float* v = a.v + kBase(p, b, kvh, dv);
  if (p.blockTable != nullptr) {
    // Paged K/V: tiles cut at page ends too, so each tile's rows are consecutive in the pool
    // (row keyRowOf(j0) onwards) and are read in place through the block table.
    for (int64_t j0 = ja; j0 < jb;) {
      const int64_t j1 = imin(imin(jb, j0 + kDecTile), (j0 / p.pageSize + 1) * p.pageSize);
      const int64_t row = keyRowOf(p, b, j0);
      decTile<Norm>(p, s, rows, nq, qs, k + row * kRow, kRow, v + row * vRow, vRow, j0, j1, st,
                    alpha, o, m, l, bias2, factor);
      j0 = j1;
    }
    return;
  }
  // Prefetch kDecAhead tiles ahead: the first ones up front, then one more per tile.
  for (int64_t j = ja + kDecTile; j < imin(jb, ja + kDecAhead * kDecTile); j += kDecTile) {
    decPrefetch(k + j * kRow, imin(jb, j + kDecTile) - j, d, kRow);
    decPrefetch(v + j * vRow, imin(jb, j + kDecTile) - j, dv, vRow);
  }
  for (int64_t j0 = ja; j0 < jb; j0 += kDecTile) {
    const int64_t j1 = imin(jb, j0 + kDecTile);
    const int64_t jn = imin(jb, j0 + kDecAhead * kDecTile);
    decTile<Norm>(p, s, rows, nq, qs, k + j0 * kRow, kRow, v + j0 * vRow, vRow, j0, j1, st, alpha,
                  o, m, l, bias2, factor, imin(jb, jn + kDecTile) - jn, k + jn * kRow,
                  v + jn * vRow);
  }
}

// Merges the `splits` partial slots of (b, kv head) (fwdCombineTask's rule: M = max m_s,
// l = sum l_s 2^(m_s - M), O = sum O_s 2^(m_s - M)) and writes O and LSE as fwdFinish does;
// pointwise: O = sum O_s, no LSE.
template <class Norm>
inline void decFinish(const AttnProblem& p, const FlashForwardArgs& a, int64_t b, int64_t kvh,
                      int64_t splits, const float* parts) {
  const Seq s = seqOf(p, b);
  const int64_t nq = s.nq, rows = p.group * nq, dv = p.dv;
  const int64_t stride = rows * (dv + 2);
  const int64_t oRow = qRowStride(p, dv);
  for (int64_t r = 0; r < rows; r++) {
    const int64_t h = kvh * p.group + r / nq, i = r % nq;
    float* out = a.o + qBase(p, b, h, dv) + i * oRow;
    if constexpr (Norm::kPointwise) {
      for (int64_t c = 0; c < dv; c++) out[c] = 0.0f;
      for (int64_t sp = 0; sp < splits; sp++)
        for (int64_t c = 0; c < dv; c++) out[c] += parts[sp * stride + r * dv + c];
      continue;
    }
    float* lse = a.lse + lseBase(p, b, h) + i;
    float top = -kInf;
    for (int64_t sp = 0; sp < splits; sp++) top = std::max(top, parts[sp * stride + rows * dv + r]);
    float lsum = 0.0f;
    for (int64_t c = 0; c < dv; c++) out[c] = 0.0f;
    for (int64_t sp = 0; sp < splits; sp++) {
      const float* x = parts + sp * stride;
      const float ms = x[rows * dv + r], ls = x[rows * dv + rows + r];
      // A split without keys for this row has m_s = -inf and l_s = 0: weight 0.
      const float w = ms == -kInf ? 0.0f : std::exp2(ms - top);
      lsum += ls * w;
      for (int64_t c = 0; c < dv; c++) out[c] += x[r * dv + c] * w;
    }
    if (p.sinks == nullptr) {
      // lsum = NaN: a poisoned row (NaN or +inf score), O = NaN and LSE = NaN.
      const bool live = lsum > 0.0f || lsum != lsum;
      const float inv = live ? 1.0f / lsum : 0.0f;
      for (int64_t c = 0; c < dv; c++) out[c] *= inv;
      *lse = live ? lseOf(top, lsum) : -kInf;
    } else {
      // As fwdFinish: the sink as a log2-unit f32 score joining once.
      const float s2 = static_cast<float>(static_cast<double>(p.sinks[h]) / kLn2);
      const float mm = top > s2 ? top : s2;
      const double scale =
          lsum > 0.0f || lsum != lsum ? std::exp2(static_cast<double>(top) - mm) : 0.0;
      const double lt = lsum * scale + std::exp2(static_cast<double>(s2) - mm);
      const float inv = static_cast<float>(scale / lt);
      for (int64_t c = 0; c < dv; c++) out[c] *= inv;
      *lse = lseOf(mm, lt);
    }
  }
}

// The decode schedule: tasks (b, kv head, key range). Split-K: the caller's count of equal
// tile-aligned splits per pair; stream-K (LeanAttention): stream_k.h's plan over the pairs' key
// tiles, cut into `streamKWorkers` equal contiguous ranges, each piece of a range a task (a
// range crossing pairs gives a piece per pair, merged by decFinish like splits); otherwise
// enough equal splits for two tasks per thread. Each split keeps two tiles at least (a split with
// fewer keys would cost more in its combine than it saves); a pair without keys keeps one empty
// task (its row is 0 with LSE -inf).
template <class Norm>
inline const char* flashDecode(const AttnProblem& p, const FlashForwardArgs& a) {
  const int threads = poolThreads();
  int64_t pairs = 0, maxRows = 0;
  for (int64_t b = 0; b < p.batch; b++)
    if (p.seqQ[b] > 0) {
      pairs += p.hkv;
      maxRows = imax(maxRows, p.group * p.seqQ[b]);
    }
  if (pairs == 0) return nullptr;
  std::vector<Task> tasks;
  std::vector<int64_t> first;  // per pair: its first task (and partial slot); then the end
  // Per pair (b, kv head) in order: its key range [lo, hi) in tile-aligned pieces.
  std::vector<int64_t> pairB, pairLo, pairHi, pairTiles;
  for (int64_t b = 0; b < p.batch; b++) {
    const Seq s = seqOf(p, b);
    if (s.nq == 0) continue;
    const int64_t lo = keyLo(p, s, 0), hi = keyHi(p, s, s.nq - 1);
    for (int64_t kvh = 0; kvh < p.hkv; kvh++) {
      pairB.push_back(b);
      pairLo.push_back(lo);
      pairHi.push_back(hi);
      pairTiles.push_back(hi > lo ? ceilDiv(hi - lo, kDecTile) : 0);
    }
  }
  auto push = [&](int64_t u, int64_t x0, int64_t x1, int64_t split) {
    Task t{pairB[u], u % p.hkv, x0, x1};  // x1: the range's end, in `cost`
    t.group = u;
    t.split = split;
    tasks.push_back(t);
  };
  if (p.streamKWorkers > 0 && p.splits <= 1) {
    const StreamKPlan plan = planStreamK(pairTiles.data(), pairs, p.streamKWorkers);
    size_t next = 0;  // pieces are in (pair, key) order: worker ranges are contiguous
    for (int64_t u = 0; u < pairs; u++) {
      first.push_back(static_cast<int64_t>(tasks.size()));
      if (pairTiles[u] == 0) {
        push(u, pairLo[u], pairLo[u], 0);
        continue;
      }
      for (int64_t sp = 0; next < plan.pieces.size() && plan.pieces[next].unit == u; next++, sp++) {
        const StreamKPiece& pc = plan.pieces[next];
        push(u, pairLo[u] + pc.begin * kDecTile, imin(pairHi[u], pairLo[u] + pc.end * kDecTile), sp);
      }
    }
  } else {
    const int64_t want = p.splits > 1 ? p.splits : ceilDiv(2 * threads, pairs);
    for (int64_t u = 0; u < pairs; u++) {
      first.push_back(static_cast<int64_t>(tasks.size()));
      const int64_t tiles = pairTiles[u], lo = pairLo[u], hi = pairHi[u];
      const int64_t splits = imax(1, imin(want, p.splits > 1 ? tiles : tiles / 2));
      for (int64_t sp = 0; sp < splits; sp++)
        // Tile-aligned key range of split sp.
        push(u, imin(hi, lo + tiles * sp / splits * kDecTile),
             imin(hi, lo + tiles * (sp + 1) / splits * kDecTile), sp);
    }
  }
  first.push_back(static_cast<int64_t>(tasks.size()));
  const int64_t slot = maxRows * (p.dv + 2);
  Floats parts(static_cast<int64_t>(tasks.size()) * slot);
  if (!parts.ok()) return kOutOfMemory;
  const int64_t per = roundUp(maxRows * (p.d + kDecTile + 1), 16);
  Floats scratch(per * threads);
  if (!scratch.ok()) return kOutOfMemory;
  // Partial slots of one pair are consecutive, each `rows (dv + 2)` floats of its own pair's
  // row count (decFinish's stride), so they are packed by the pair's rows, not maxRows.
  std::vector<int64_t> off(tasks.size() + 1, 0);
  for (size_t t = 0; t < tasks.size(); t++)
    off[t + 1] = off[t] + p.group * p.seqQ[tasks[t].b] * (p.dv + 2);
  auto body = [&](int64_t t, int thread) {
    const Task& task = tasks[t];
    decTask<Norm>(p, a, task.b, task.h, task.x0, task.cost, scratch.get() + per * thread,
                  parts.get() + off[t]);
  };
  parallel(static_cast<int64_t>(tasks.size()), body);
  auto finish = [&](int64_t g, int) {
    const Task& task = tasks[first[g]];
    decFinish<Norm>(p, a, task.b, task.h, first[g + 1] - first[g], parts.get() + off[first[g]]);
  };
  parallel(static_cast<int64_t>(first.size()) - 1, finish);
  return nullptr;
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
