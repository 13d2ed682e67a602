// FlashAttention-2 forward (Dao, 2023, Algorithm 1) on the CPU. One task is a block of
// Bq = kFwdNV * V::L query rows of one (batch, head); the queries run along the SIMD lanes, so
// the scores of one key are a row of vectors and the online-softmax statistics m and l are
// per-lane vectors: the row max and row sum need no horizontal reductions. K and V are read
// in place (no packing): a key's elements are broadcast against the packed, pre-scaled Q^T.
// Templated on the skeleton's hooks (flash_hooks.h): the normalize policy (Softmax: online
// max and sum, with optional sinks joining at the end; the pointwise Sigmoid, w = sigmoid(s + b),
// and Silu, w = c silu(s): no row statistics) and the score-mod policy (NoMods, or the problem's built-in mods on each tile).
// Permuted tiles (engine.h permQ / permK; null = the plain path): Q rows are packed and O / LSE
// rows written through permQ; under permK each visited key tile's K and V rows are gathered
// once into a per-thread buffer (tileK (d + dv) floats) that the same tile code reads.
// Parameters per ISA: kFwdNV, kFwdMR (register rows of both micro-kernels), kFwdTileK.
#pragma once

#include <limits>
#include <type_traits>
#include <vector>
#include <cmath>

#include "flash_decode.h"
#include "flash_hooks.h"
#include "stream_k.h"

namespace attnkit {
namespace ATTNKIT_NS {

constexpr int64_t kFwdBq = kFwdNV * V::L;

// S^T[r][lanes] = sum_c K[r][c] * Q^T[c][lanes] for R consecutive keys.
template <int R>
struct FwdScores {
  static ATTNKIT_ALWAYS_INLINE void run(int64_t d, const float* qt, const float* k, int64_t kRow, float* st) {
    V acc[R][kFwdNV];
    for (int r = 0; r < R; r++)
      for (int v = 0; v < kFwdNV; v++) acc[r][v] = V::zero();
    for (int64_t c = 0; c < d; c++) {
      V q[kFwdNV];
      for (int v = 0; v < kFwdNV; v++) q[v] = V::load(qt + c * kFwdBq + v * V::L);
      for (int r = 0; r < R; r++) {
        V x = V::set1(k[r * kRow + c]);
        for (int v = 0; v < kFwdNV; v++) acc[r][v] = V::fma(x, q[v], acc[r][v]);
      }
    }
    for (int r = 0; r < R; r++)
      for (int v = 0; v < kFwdNV; v++) acc[r][v].store(st + r * kFwdBq + v * V::L);
  }
};

// O^T[c0 + r][lanes] = alpha * O^T[c0 + r][lanes] + sum_j V[j][c0 + r] * P^T[j][lanes], R dims.
template <int R>
struct FwdPV {
  static ATTNKIT_ALWAYS_INLINE void run(int64_t keys, const float* pt, const float* v, int64_t vRow, float* ot,
                  const V* alpha) {
    V acc[R][kFwdNV];
    for (int r = 0; r < R; r++)
      for (int u = 0; u < kFwdNV; u++) acc[r][u] = alpha[u] * V::load(ot + r * kFwdBq + u * V::L);
    for (int64_t j = 0; j < keys; j++) {
      V pj[kFwdNV];
      for (int u = 0; u < kFwdNV; u++) pj[u] = V::load(pt + j * kFwdBq + u * V::L);
      const float* vj = v + j * vRow;
      for (int r = 0; r < R; r++) {
        V x = V::set1(vj[r]);
        for (int u = 0; u < kFwdNV; u++) acc[r][u] = V::fma(x, pj[u], acc[r][u]);
      }
    }
    for (int r = 0; r < R; r++)
      for (int u = 0; u < kFwdNV; u++) acc[r][u].store(ot + r * kFwdBq + u * V::L);
  }
};

// Per query block: Q^T, the unnormalised O^T and the running statistics.
struct FwdBlockState {
  float* qt;    // d x Bq, Q^T * scale * log2(e)
  float* ot;    // dv x Bq, unnormalised O^T
  float* m;     // Bq, running max (log2 units)
  float* l;     // Bq, running sum
  float* diag;  // Bq, i + Nk - Nq of each lane
  int64_t i0, rows;
};

struct FwdScratch {
  float* st;    // tileK x Bq, scores then probabilities
  float* kept;  // Bq, block-sparse flag of each lane for the current key block
  float* blocks;
  // Permuted keys only (engine.h permK): the current key tile's K and V rows gathered through
  // the index (tileK x d, tileK x dv), from a buffer of their own; null otherwise.
  float* ks = nullptr;
  float* vs = nullptr;
  int64_t d, dv;
  static int64_t blockFloats(int64_t d, int64_t dv) { return (d + dv + 3) * kFwdBq; }
  static int64_t floats(int64_t d, int64_t dv, int64_t tileK, int64_t nsub) {
    return (tileK + 1) * kFwdBq + nsub * blockFloats(d, dv);
  }
  FwdScratch(float* base, int64_t d_, int64_t dv_, int64_t tileK)
      : st(base), kept(st + tileK * kFwdBq), blocks(kept + kFwdBq), d(d_), dv(dv_) {}
  FwdBlockState block(int64_t s, int64_t i0, int64_t rows) const {
    float* b = blocks + s * blockFloats(d, dv);
    FwdBlockState x{b, b + d * kFwdBq, nullptr, nullptr, nullptr, i0, rows};
    x.m = x.ot + dv * kFwdBq;
    x.l = x.m + kFwdBq;
    x.diag = x.l + kFwdBq;
    return x;
  }
};

// Masks the scores of keys [j0, j1) (rows of st) of a partially visible tile with -inf.
inline void fwdMask(const AttnProblem& p, const uint8_t* bs, const FwdBlockState& blk, int64_t j0,
                    int64_t j1, const FwdScratch& sc) {
  const float lo = p.left < 0 ? -kInf : -static_cast<float>(p.left);
  const float hi = p.right < 0 ? kInf : static_cast<float>(p.right);
  const V neg = V::set1(-kInf);
  int64_t keptBlock = -1;
  for (int64_t j = j0; j < j1; j++) {
    float* row = sc.st + (j - j0) * kFwdBq;
    if (bs != nullptr && j / p.bsBlockK != keptBlock) {
      keptBlock = j / p.bsBlockK;
      for (int64_t i = 0; i < kFwdBq; i++) {
        const bool keep =
            i < blk.rows && bs[(blk.i0 + i) / p.bsBlockQ * p.bsNbk + keptBlock] != 0;
        sc.kept[i] = keep ? 1.0f : 0.0f;
      }
    }
    const V vj = V::set1(static_cast<float>(j));
    for (int v = 0; v < kFwdNV; v++) {
      // Key j is in row i's window iff -left <= j - diag_i <= right.
      V x = V::keep_in(V::load(row + v * V::L), vj - V::load(blk.diag + v * V::L), lo, hi, neg);
      if (bs != nullptr) x = V::keep_nonzero(x, V::load(sc.kept + v * V::L), neg);
      x.store(row + v * V::L);
    }
  }
}

// The HSTU mask on the scores of keys [j0, j1) of a visited tile (every one is partial with
// it): pairs hstuAllowed refuses get -inf, as fwdMask's. Scalar: HSTU problems only.
inline void fwdHstuMask(const AttnProblem& p, int64_t b, int64_t n, int64_t off,
                        const FwdBlockState& blk, int64_t j0, int64_t j1, const FwdScratch& sc) {
  for (int64_t j = j0; j < j1; j++) {
    float* row = sc.st + (j - j0) * kFwdBq;
    for (int64_t i = 0; i < blk.rows; i++)
      if (!hstuAllowed(p, b, blk.i0 + i + off, j, n)) row[i] = -kInf;
  }
}

// Softmax policy on a tile of scores: new max, rescale factor alpha = exp2(m_old - m_new),
// P = exp2(S - m_new) in place, l = alpha l + rowsum(P).
ATTNKIT_ALWAYS_INLINE void fwdSoftmax(int64_t nkeys, const FwdBlockState& blk, const FwdScratch& sc, V* alpha) {
  V m[kFwdNV], mx[kFwdNV], safe[kFwdNV], sum[kFwdNV], tot[kFwdNV];
  for (int v = 0; v < kFwdNV; v++) {
    mx[v] = m[v] = V::load(blk.m + v * V::L);
    tot[v] = V::zero();
  }
  for (int64_t j = 0; j < nkeys; j++)
    for (int v = 0; v < kFwdNV; v++) {
      const V x = V::load(sc.st + j * kFwdBq + v * V::L);
      mx[v] = V::max(mx[v], x);
      // The plain sum of the scores is NaN iff a score is NaN (or +inf meets -inf, where the
      // max is +inf anyway): the max ignores NaN and exp2v maps it to 0, so this is how a
      // NaN row is seen (one add per score, checked once per tile below).
      tot[v] = tot[v] + x;
    }
  for (int v = 0; v < kFwdNV; v++) {
    // A lane with no allowed key so far keeps m = -inf; subtracting 0 instead keeps its
    // probabilities exp2(-inf) = 0 rather than NaN.
    safe[v] = V::keep_in(mx[v], mx[v], -3.0e38f, 3.0e38f, V::zero());
    alpha[v] = exp2v(m[v] - safe[v]);
    sum[v] = V::zero();
  }
  for (int64_t j = 0; j < nkeys; j++) {
    float* row = sc.st + j * kFwdBq;
    for (int v = 0; v < kFwdNV; v++) {
      V e = exp2v(V::load(row + v * V::L) - safe[v]);
      sum[v] = sum[v] + e;
      e.store(row + v * V::L);
    }
  }
  for (int v = 0; v < kFwdNV; v++) {
    V::fma(V::load(blk.l + v * V::L), alpha[v], sum[v]).store(blk.l + v * V::L);
    mx[v].store(blk.m + v * V::L);
    tot[v].store(sc.kept + v * V::L);
  }
  // A NaN score, or a +inf one (exp(inf - inf) is NaN in the reference), poisons the row:
  // l = NaN stays NaN (NaN * alpha + sum), and the finish writes O = NaN, LSE = NaN.
  for (int64_t i = 0; i < kFwdBq; i++) {
    if (sc.kept[i] != sc.kept[i] || blk.m[i] == kInf) blk.l[i] = std::numeric_limits<float>::quiet_NaN();
  }
}

// Pointwise policies (Sigmoid, Silu): W = Norm::weight(S + b) in place (b: sigmoid's bias in
// log2 units, 0 otherwise); O^T accumulates unscaled.
template <class Norm>
ATTNKIT_ALWAYS_INLINE void fwdPointwise(int64_t nkeys, float bias2, float factor,
                                        const FwdScratch& sc, V* alpha) {
  const V b = V::set1(bias2);
  for (int64_t j = 0; j < nkeys; j++) {
    float* row = sc.st + j * kFwdBq;
    for (int v = 0; v < kFwdNV; v++)
      Norm::weight(V::load(row + v * V::L) + b, nullptr, factor).store(row + v * V::L);
  }
  for (int v = 0; v < kFwdNV; v++) alpha[v] = V::set1(1.0f);
}

// Per (batch, head) constants of the hooks.
struct FwdHead {
  HeadMods mods;
  float bias2;   // sigmoid: b * log2 e
  float factor;  // silu: c of w = c silu(s)
  float sink;   // softmax with sinks: sink_h (natural log units)
  bool hasSink;
  // The batch entry, its key count and nk - nq (the HSTU mask's rule: query row i is position
  // i + off of the length-n sequence; off > 0 for M-FALCON's candidates).
  int64_t b, n, off;
  RabHead rab;  // HSTU's bucketed rab (rab.on false: none)
};

// O^T = alpha O^T + P V over the keys of a tile (P^T in st, V rows at vj).
ATTNKIT_ALWAYS_INLINE void fwdPV(int64_t dv, int64_t nkeys, const float* st, const float* vj,
                                 int64_t vRow, float* ot, const V* alpha) {
  int64_t c = 0;
  for (; c + kFwdMR <= dv; c += kFwdMR)
    FwdPV<kFwdMR>::run(nkeys, st, vj + c, vRow, ot + c * kFwdBq, alpha);
  if (c < dv) withRows<FwdPV, kFwdMR>(dv - c, nkeys, st, vj + c, vRow, ot + c * kFwdBq, alpha);
}

// Whether the V rows of a tile hold no NaN or infinity (checked on partial tiles only).
inline bool fwdRowsFinite(const float* vj, int64_t vRow, int64_t nkeys, int64_t dv) {
  float acc = 0.0f;
  for (int64_t j = 0; j < nkeys; j++)
    for (int64_t c = 0; c < dv; c++) acc += vj[j * vRow + c] * 0.0f;
  return acc == 0.0f;
}

// P V on a partial tile with a non-finite V row: the dense product would give the lanes that
// do not see that key 0 * NaN = NaN (the reference sums only allowed keys). So the product runs
// with those rows zeroed, and each such key is then added to the lanes that are allowed it.
ATTNKIT_NOINLINE inline void fwdPVNonFinite(const AttnProblem& p, const uint8_t* bs, const float* vj,
                                            int64_t vRow, int64_t j0, int64_t j1,
                                            const FwdBlockState& blk, const FwdScratch& sc,
                                            const V* alpha, int64_t b, int64_t n,
                                            int64_t off) {
  const int64_t nkeys = j1 - j0, dv = p.dv;
  std::vector<float> vz(static_cast<size_t>(nkeys * dv));
  std::vector<int64_t> bad;
  for (int64_t j = 0; j < nkeys; j++) {
    bool fin = true;
    for (int64_t c = 0; c < dv; c++) {
      const float x = vj[j * vRow + c];
      vz[j * dv + c] = x;
      if (!(x - x == 0.0f)) fin = false;
    }
    if (!fin) {
      bad.push_back(j);
      for (int64_t c = 0; c < dv; c++) vz[j * dv + c] = 0.0f;
    }
  }
  fwdPV(dv, nkeys, sc.st, vz.data(), dv, blk.ot, alpha);
  const float lo = p.left < 0 ? -kInf : -static_cast<float>(p.left);
  const float hi = p.right < 0 ? kInf : static_cast<float>(p.right);
  for (const int64_t jj : bad) {
    const int64_t j = j0 + jj;
    for (int64_t i = 0; i < blk.rows; i++) {
      const float rel = static_cast<float>(j) - blk.diag[i];
      if (!(rel >= lo && rel <= hi)) continue;
      if (bs != nullptr && bs[(blk.i0 + i) / p.bsBlockQ * p.bsNbk + j / p.bsBlockK] == 0) continue;
      if (p.hstuTargets != nullptr && !hstuAllowed(p, b, blk.i0 + i + off, j, n)) continue;
      const float w = sc.st[jj * kFwdBq + i];
      for (int64_t c = 0; c < dv; c++) blk.ot[c * kFwdBq + i] += w * vj[jj * vRow + c];
    }
  }
}

// One key tile [j0, j1) for one query block: scores, score mods, mask, the normalize policy
// (FA2's online softmax, or a pointwise weight), O^T update. k and vj point at the tile's first key row
// (in place, or the rows gathered through a key permutation).
template <class Norm, class M>
ATTNKIT_NOINLINE void fwdTile(const AttnProblem& p, const uint8_t* bs, const float* k, int64_t kRow,
                    const float* vj, int64_t vRow, int64_t j0, int64_t j1, Vis vis,
                    const FwdBlockState& blk, const FwdScratch& sc, const FwdHead& hd) {
  const int64_t nkeys = j1 - j0;
  int64_t r = 0;
  for (; r + kFwdMR <= nkeys; r += kFwdMR)
    FwdScores<kFwdMR>::run(p.d, blk.qt, k + r * kRow, kRow, sc.st + r * kFwdBq);
  if (r < nkeys)
    withRows<FwdScores, kFwdMR>(nkeys - r, p.d, blk.qt, k + r * kRow, kRow, sc.st + r * kFwdBq);
  // HSTU's rab joins the scaled score first, before the mods (engine.h AttnProblem.rabPos).
  if (hd.rab.on) fwdRab<kFwdBq>(hd.rab, blk.i0, blk.rows, hd.off, j0, j1, sc.st);
  if constexpr (M::kActive) fwdMods<kFwdBq, kFwdNV>(hd.mods, blk.i0, blk.rows, blk.diag, j0, j1, sc.st);
  if (vis == Vis::kPartial) fwdMask(p, bs, blk, j0, j1, sc);
  if (p.hstuTargets != nullptr) fwdHstuMask(p, hd.b, hd.n, hd.off, blk, j0, j1, sc);

  V alpha[kFwdNV];
  if constexpr (Norm::kPointwise)
    fwdPointwise<Norm>(nkeys, hd.bias2, hd.factor, sc, alpha);
  else
    fwdSoftmax(nkeys, blk, sc, alpha);
  if (vis == Vis::kPartial && !fwdRowsFinite(vj, vRow, nkeys, p.dv)) {
    fwdPVNonFinite(p, bs, vj, vRow, j0, j1, blk, sc, alpha, hd.b, hd.n, hd.off);
    return;
  }
  fwdPV(p.dv, nkeys, sc.st, vj, vRow, blk.ot, alpha);
}

// The block's outputs. Softmax: O = O^T / l (the deferred FA2 normalisation) and LSE; a sink
// joins as e^(sink - M) with M = max(m, sink). Empty rows: O = 0 and LSE = -inf (sink: LSE =
// sink). Pointwise: O = O^T. o and lse point at row 0 of the (batch, head); tiled row i0 + i is
// written to row pq[i0 + i] with a query permutation (pq non-null), else to row i0 + i.
template <class Norm>
inline void fwdFinish(const FwdBlockState& blk, float* o0, int64_t oRow, float* lse0,
                      const int32_t* pq, int64_t dv, const FwdHead& hd) {
  for (int64_t i = 0; i < blk.rows; i++) {
    const int64_t row = pq != nullptr ? pq[blk.i0 + i] : blk.i0 + i;
    float* o = o0 + row * oRow;
    if constexpr (Norm::kPointwise) {
      for (int64_t c = 0; c < dv; c++) o[c] = blk.ot[c * kFwdBq + i];
    } else if (!hd.hasSink) {
      const float li = blk.l[i];
      // li = NaN: a poisoned row (NaN or +inf score), O = NaN and LSE = NaN.
      const bool live = li > 0.0f || li != li;
      const float inv = live ? 1.0f / li : 0.0f;
      for (int64_t c = 0; c < dv; c++) o[c] = blk.ot[c * kFwdBq + i] * inv;
      lse0[row] = live ? lseOf(blk.m[i], li) : -kInf;
    } else {
      // The sink as a score in log2 units, an f32 like the scores, so that lseOf sees a max
      // the backward can recompute when the sink is the top.
      const float m = blk.m[i], s2 = static_cast<float>(static_cast<double>(hd.sink) / kLn2);
      const float top = m > s2 ? m : s2;
      const double scale =
          blk.l[i] > 0.0f || blk.l[i] != blk.l[i] ? std::exp2(static_cast<double>(m) - top) : 0.0;
      const double l = blk.l[i] * scale + std::exp2(static_cast<double>(s2) - top);
      const float inv = static_cast<float>(scale / l);
      for (int64_t c = 0; c < dv; c++) o[c] = blk.ot[c * kFwdBq + i] * inv;
      lse0[row] = lseOf(top, l);
    }
  }
}

// Query rows [i0, i0 + nsub * Bq) of (b, h), as nsub blocks of Bq lanes that share each key
// tile: one pass over K and V (from L3) serves them all while the tile sits in L2.
struct FwdGroup {
  Seq s;
  int64_t i0, rowsAll, ns, kvh, qRow, kRow, vRow, oRow;
  const float* k;
  const float* v;
  const int32_t* pq;  // the (b, h) slice of the query permutation, or null (identity)
  const int32_t* pk;  // the (b, kv head) slice of the key permutation, or null
  int64_t b;          // the batch entry (paged K/V: its block table row, keyRowOf)
  const uint8_t* bs;
  FwdHead hd;
  int64_t jStart, jEnd;  // the group's key band
};

template <class Norm, class M>
inline FwdGroup fwdGroup(const AttnProblem& p, int64_t b, int64_t h, int64_t i0, int64_t nsub,
                         const FlashForwardArgs& a) {
  FwdGroup g;
  g.s = seqOf(p, b);
  g.i0 = i0;
  g.rowsAll = imin(nsub * kFwdBq, g.s.nq - i0);
  g.ns = ceilDiv(g.rowsAll, kFwdBq);
  g.kvh = h / p.group;
  g.qRow = qRowStride(p, p.d);
  g.kRow = kRowStride(p, p.d);
  g.vRow = kRowStride(p, p.dv);
  g.oRow = qRowStride(p, p.dv);
  g.k = a.k + kBase(p, b, g.kvh, p.d);
  g.v = a.v + kBase(p, b, g.kvh, p.dv);
  g.pq = a.permQ != nullptr ? a.permQ + lseBase(p, b, h) : nullptr;
  g.pk = a.permK != nullptr ? a.permK + kIdxBase(p, b, g.kvh) : nullptr;
  g.b = b;
  g.bs = sparseBase(p, b, h);
  if constexpr (M::kActive) g.hd.mods = headMods(p, b, h);
  g.hd.bias2 = std::is_same_v<Norm, Sigmoid> ? p.sigmoidBias[b] * kLog2e : 0.0f;
  g.hd.factor = p.siluFactor;
  g.hd.hasSink = !Norm::kPointwise && p.sinks != nullptr;
  g.hd.sink = g.hd.hasSink ? p.sinks[h] : 0.0f;
  g.hd.b = b;
  g.hd.n = g.s.nk;
  g.hd.off = g.s.off;
  g.hd.rab = rabHead(p, b, h);
  g.jStart = keyLo(p, g.s, i0);
  g.jEnd = g.rowsAll > 0 ? keyHi(p, g.s, i0 + g.rowsAll - 1) : 0;
  return g;
}

inline FwdBlockState fwdBlock(const FwdGroup& g, const FwdScratch& sc, int64_t t) {
  const int64_t bi0 = g.i0 + t * kFwdBq;
  return sc.block(t, bi0, imin(kFwdBq, g.s.nq - bi0));
}

// The key tiles of the group's band, each visited by one of its blocks at least, are indexed
// 0..n-1 (n returned); with `from` / `to` (tile indices), [*ja, *jb) gets the keys of tiles
// [from, to) (empty when from >= to). Tiles as in fwdTiles.
inline int64_t fwdVisitedTiles(const AttnProblem& p, const FwdGroup& g, int64_t tileK, int64_t from,
                               int64_t to, int64_t* ja, int64_t* jb) {
  const int64_t block = g.bs != nullptr ? p.bsBlockK : 0;
  int64_t n = 0;
  *ja = *jb = g.jStart;
  for (int64_t j0 = g.jStart; j0 < g.jEnd;) {
    const int64_t j1 = tileEnd(j0, g.jEnd, tileK, block);
    bool visited = false;
    for (int64_t t = 0; t < g.ns && !visited; t++) {
      const int64_t bi0 = g.i0 + t * kFwdBq;
      visited = classifyTile(p, g.s, g.bs, bi0, imin(bi0 + kFwdBq, g.s.nq), j0, j1) != Vis::kSkip;
    }
    if (visited) {
      if (n == from) *ja = j0;
      if (n + 1 == to) *jb = j1;
      n++;
    }
    j0 = j1;
  }
  if (from >= to) *jb = *ja;
  return n;
}

// The group's blocks: packed, pre-scaled Q^T and empty statistics.
inline void fwdStart(const AttnProblem& p, const FwdGroup& g, const float* q, const FwdScratch& sc) {
  // Scores in log2 units: exp2(x * log2 e) = exp(x), one multiply saved per score.
  const float qScale = p.scale * kLog2e;
  for (int64_t t = 0; t < g.ns; t++) {
    const FwdBlockState blk = fwdBlock(g, sc, t);
    for (int64_t i = 0; i < kFwdBq; i++) {
      // Tiled row i0 + i reads query row pq[i0 + i] under a permutation.
      const int64_t row = i >= blk.rows ? 0 : g.pq != nullptr ? g.pq[blk.i0 + i] : blk.i0 + i;
      const float* qi = q + row * g.qRow;
      for (int64_t c = 0; c < p.d; c++) blk.qt[c * kFwdBq + i] = i < blk.rows ? qi[c] * qScale : 0.0f;
      blk.diag[i] = static_cast<float>(blk.i0 + i + g.s.off);
      blk.m[i] = -kInf;
      blk.l[i] = 0.0f;
    }
    for (int64_t i = 0; i < p.dv * kFwdBq; i++) blk.ot[i] = 0.0f;
  }
}

// The key tiles of [ja, jb) (tile boundaries of the whole band: ja and jb are tile starts / ends
// of it) for every block of the group, skipping the tiles a block does not see. Under a key
// permutation a tile's K and V rows are gathered once (for all blocks) into sc.ks / sc.vs.
template <class Norm, class M>
inline void fwdTiles(const AttnProblem& p, const FwdGroup& g, int64_t ja, int64_t jb, int64_t tileK,
                     const FwdScratch& sc) {
  const int64_t block = g.bs != nullptr ? p.bsBlockK : 0;
  for (int64_t j0 = ja; j0 < jb;) {
    const int64_t j1 = tileEnd(j0, jb, tileK, block);
    const float* kt = g.k + j0 * g.kRow;
    const float* vt = g.v + j0 * g.vRow;
    int64_t kRow = g.kRow, vRow = g.vRow;
    const bool paged = p.blockTable != nullptr;
    bool staged = g.pk == nullptr && !paged;
    if (paged && j0 / p.pageSize == (j1 - 1) / p.pageSize) {
      // Paged K/V, a tile inside one page: its rows are consecutive in the pool, read in place.
      kt = g.k + keyRowOf(p, g.b, j0) * g.kRow;
      vt = g.v + keyRowOf(p, g.b, j0) * g.vRow;
      staged = true;
    }
    for (int64_t t = 0; t < g.ns; t++) {
      const FwdBlockState blk = fwdBlock(g, sc, t);
      const Vis vis = classifyTile(p, g.s, g.bs, blk.i0, blk.i0 + blk.rows, j0, j1);
      if (vis == Vis::kSkip) continue;
      if (!staged) {
        // Permuted keys, or a paged tile across pages: each row through the index / block table.
        for (int64_t j = j0; j < j1; j++) {
          const int64_t row = g.pk != nullptr ? g.pk[j] : keyRowOf(p, g.b, j);
          const float* kr = g.k + row * g.kRow;
          const float* vr = g.v + row * g.vRow;
          std::copy(kr, kr + p.d, sc.ks + (j - j0) * p.d);
          std::copy(vr, vr + p.dv, sc.vs + (j - j0) * p.dv);
        }
        kt = sc.ks;
        vt = sc.vs;
        kRow = p.d;
        vRow = p.dv;
        staged = true;
      }
      fwdTile<Norm, M>(p, g.bs, kt, kRow, vt, vRow, j0, j1, vis, blk, sc, g.hd);
    }
    j0 = j1;
  }
}

template <class Norm>
inline void fwdFinishGroup(const AttnProblem& p, const FlashForwardArgs& a, int64_t b, int64_t h,
                           const FwdGroup& g, const FwdScratch& sc) {
  for (int64_t t = 0; t < g.ns; t++) {
    const FwdBlockState blk = fwdBlock(g, sc, t);
    float* lse = Norm::kPointwise ? nullptr : a.lse + lseBase(p, b, h);
    fwdFinish<Norm>(blk, a.o + qBase(p, b, h, p.dv), g.oRow, lse, g.pq, p.dv, g.hd);
  }
}

// Band schedule: one task walks the group's whole key band.
template <class Norm, class M>
inline void fwdTask(const AttnProblem& p, const FlashForwardArgs& a, int64_t b, int64_t h,
                    int64_t i0, int64_t nsub, int64_t tileK, const FwdScratch& sc) {
  const FwdGroup g = fwdGroup<Norm, M>(p, b, h, i0, nsub, a);
  fwdStart(p, g, a.q + qBase(p, b, h, p.d), sc);
  fwdTiles<Norm, M>(p, g, g.jStart, g.jEnd, tileK, sc);
  fwdFinishGroup<Norm>(p, a, b, h, g, sc);
}

// Split-K partials: per (group, split) and block t, O^T (dv x Bq), m and l (Bq each).
inline int64_t fwdPartialFloats(int64_t dv) { return (dv + 2) * kFwdBq; }

// Split-K: split `split` of `splits` of the group's visited tiles (contiguous, balanced to one
// tile), its unnormalised (m, l, O^T) stored to `part` (nsub blocks).
template <class Norm, class M>
inline void fwdSplitTask(const AttnProblem& p, const FlashForwardArgs& a, int64_t b, int64_t h,
                         int64_t i0, int64_t nsub, int64_t split, int64_t splits, int64_t tileK,
                         const FwdScratch& sc, float* part) {
  const FwdGroup g = fwdGroup<Norm, M>(p, b, h, i0, nsub, a);
  int64_t ja, jb;
  const int64_t n = fwdVisitedTiles(p, g, tileK, -1, -1, &ja, &jb);
  fwdVisitedTiles(p, g, tileK, n * split / splits, n * (split + 1) / splits, &ja, &jb);
  fwdStart(p, g, a.q + qBase(p, b, h, p.d), sc);
  fwdTiles<Norm, M>(p, g, ja, jb, tileK, sc);
  for (int64_t t = 0; t < g.ns; t++) {
    const FwdBlockState blk = fwdBlock(g, sc, t);
    float* x = part + t * fwdPartialFloats(p.dv);
    std::copy(blk.ot, blk.ot + p.dv * kFwdBq, x);
    std::copy(blk.m, blk.m + kFwdBq, x + p.dv * kFwdBq);
    std::copy(blk.l, blk.l + kFwdBq, x + (p.dv + 1) * kFwdBq);
  }
}

// Split-K combine of a group's partials (associative online softmax: m = max m_s,
// l = sum l_s 2^(m_s - m), O^T = sum O^T_s 2^(m_s - m); pointwise: plain sums), then the
// band's finish (sinks join once, empty rows).
template <class Norm, class M>
inline void fwdCombineTask(const AttnProblem& p, const FlashForwardArgs& a, int64_t b, int64_t h,
                           int64_t i0, int64_t nsub, int64_t splits, const FwdScratch& sc,
                           const float* parts) {
  const FwdGroup g = fwdGroup<Norm, M>(p, b, h, i0, nsub, a);
  const int64_t stride = nsub * fwdPartialFloats(p.dv);
  float w[kFwdBq];
  for (int64_t t = 0; t < g.ns; t++) {
    const FwdBlockState blk = fwdBlock(g, sc, t);
    for (int64_t i = 0; i < kFwdBq; i++) {
      blk.m[i] = -kInf;
      blk.l[i] = 0.0f;
    }
    for (int64_t i = 0; i < p.dv * kFwdBq; i++) blk.ot[i] = 0.0f;
    if constexpr (!Norm::kPointwise) {
      for (int64_t sp = 0; sp < splits; sp++) {
        const float* m = parts + sp * stride + t * fwdPartialFloats(p.dv) + p.dv * kFwdBq;
        for (int64_t i = 0; i < kFwdBq; i++) blk.m[i] = std::max(blk.m[i], m[i]);
      }
    }
    for (int64_t sp = 0; sp < splits; sp++) {
      const float* x = parts + sp * stride + t * fwdPartialFloats(p.dv);
      const float* m = x + p.dv * kFwdBq;
      const float* l = m + kFwdBq;
      for (int64_t i = 0; i < kFwdBq; i++) {
        if constexpr (Norm::kPointwise) {
          w[i] = 1.0f;
        } else {
          // A split without keys for lane i has m_s = -inf and l_s = 0: weight 0.
          w[i] = m[i] == -kInf ? 0.0f : std::exp2(m[i] - blk.m[i]);
          blk.l[i] += l[i] * w[i];
        }
      }
      for (int64_t c = 0; c < p.dv; c++)
        for (int64_t i = 0; i < kFwdBq; i++) blk.ot[c * kFwdBq + i] += x[c * kFwdBq + i] * w[i];
    }
  }
  fwdFinishGroup<Norm>(p, a, b, h, g, sc);
}

// Stream-K (AttnProblem.streamKWorkers, LeanAttention): units are the groups of one query
// block (nsub = 1) in (b, h, i0) order, their visited key tiles counted by fwdVisitedTiles
// (the tiles the band loop and split-K visit); planStreamK assigns each worker its pieces. One
// pool task per worker reduces its pieces in order, each from an empty state into its own
// partial slot (numbered as the plan's pieces); then one fix-up per unit merges its pieces
// (consecutive slots) with split-K's combine, which also finishes the unit (sinks once; a unit
// without pieces, an empty sequence or fully masked band, gets O = 0 and LSE = -inf or the sink).
template <class Norm, class M, class ScratchOf>
inline const char* fwdStreamK(const AttnProblem& p, const FlashForwardArgs& a, int64_t tileK,
                              const std::vector<Task>& groups, ScratchOf& scratchOf) {
  const int64_t nunits = static_cast<int64_t>(groups.size());
  std::vector<int64_t> tiles(static_cast<size_t>(nunits));
  for (int64_t u = 0; u < nunits; u++) {
    const FwdGroup g = fwdGroup<Norm, M>(p, groups[u].b, groups[u].h, groups[u].x0, 1, a);
    int64_t ja, jb;
    tiles[u] = fwdVisitedTiles(p, g, tileK, -1, -1, &ja, &jb);
  }
  // Workers past the total number of tiles would get no piece (the first `total` workers get
  // one tile each either way), so they are not launched: the same pieces, without up to 2^24
  // empty tasks and offsets.
  int64_t total = 0;
  for (const int64_t t : tiles) total += t;
  const int64_t workers = imax(1, imin(p.streamKWorkers, total));
  const StreamKPlan plan = planStreamK(tiles.data(), nunits, workers);
  const int64_t npieces = static_cast<int64_t>(plan.pieces.size());
  const int64_t partStride = fwdPartialFloats(p.dv);
  Floats parts(npieces * partStride);
  if (!parts.ok()) return kOutOfMemory;
  auto work = [&](int64_t w, int thread) {
    const FwdScratch sc = scratchOf(thread);
    for (int64_t k = plan.workerStart[w]; k < plan.workerStart[w + 1]; k++) {
      const StreamKPiece& piece = plan.pieces[k];
      const Task& unit = groups[piece.unit];
      const FwdGroup g = fwdGroup<Norm, M>(p, unit.b, unit.h, unit.x0, 1, a);
      int64_t ja, jb;
      fwdVisitedTiles(p, g, tileK, piece.begin, piece.end, &ja, &jb);
      fwdStart(p, g, a.q + qBase(p, unit.b, unit.h, p.d), sc);
      fwdTiles<Norm, M>(p, g, ja, jb, tileK, sc);
      const FwdBlockState blk = fwdBlock(g, sc, 0);
      float* x = parts.get() + k * partStride;
      std::copy(blk.ot, blk.ot + p.dv * kFwdBq, x);
      std::copy(blk.m, blk.m + kFwdBq, x + p.dv * kFwdBq);
      std::copy(blk.l, blk.l + kFwdBq, x + (p.dv + 1) * kFwdBq);
    }
  };
  parallel(workers, work);
  // Each unit's pieces are consecutive in plan order: first[u], count[u] (0 for no tiles).
  std::vector<int64_t> first(static_cast<size_t>(nunits), 0), count(static_cast<size_t>(nunits), 0);
  for (int64_t k = npieces - 1; k >= 0; k--) {
    first[plan.pieces[k].unit] = k;
    count[plan.pieces[k].unit]++;
  }
  auto fixup = [&](int64_t u, int thread) {
    const FwdScratch sc = scratchOf(thread);
    fwdCombineTask<Norm, M>(p, a, groups[u].b, groups[u].h, groups[u].x0, 1, count[u], sc,
                            parts.get() + first[u] * partStride);
  };
  parallel(nunits, fixup);
  return nullptr;
}

template <class Norm, class M>
inline const char* flashForwardImpl(const AttnProblem& p, const FlashForwardArgs& a) {
  const int64_t tileK = p.tileK > 0 ? p.tileK : kFwdTileK;
  const int threads = poolThreads();
  // Split-K beyond one split per key is pointless (tiles hold one key at least).
  const int64_t splits = imax(1, imin(p.splits, p.maxSeqK));
  // Query blocks per task: K and V of a head that overflow L2 (1 MiB here; half of it is
  // assumed free) are streamed from L3 once per task, so share them among up to kFwdMaxSub
  // blocks, keeping >= 8 tasks per thread for the dynamic schedule to balance.
  int64_t blocksTotal = 0;
  for (int64_t b = 0; b < p.batch; b++) blocksTotal += ceilDiv(p.seqQ[b], kFwdBq) * p.hq;
  const bool kvInL2 = p.maxSeqK * (p.d + p.dv) * 4 <= (512 << 10);
  int64_t nsub = kvInL2 ? 1 : kFwdMaxSub;
  while (nsub > 1 && blocksTotal * splits < nsub * 8 * threads) nsub /= 2;
  // Stream-K's units are single query blocks (the decode case it is for has one or two per
  // head; its balance comes from the key partition, not from sharing tiles among blocks).
  if (p.streamKWorkers > 0) nsub = 1;
  // Tasks run head by head (the head's K and V stay in L3), heavy blocks first within a head.
  std::vector<Task> groups;
  for (int64_t b = 0; b < p.batch; b++) {
    const Seq s = seqOf(p, b);
    for (int64_t h = 0; h < p.hq; h++) {
      for (int64_t i0 = 0; i0 < s.nq; i0 += nsub * kFwdBq) {
        const int64_t rows = imin(nsub * kFwdBq, s.nq - i0);
        const int64_t keys = imax(0, keyHi(p, s, i0 + rows - 1) - keyLo(p, s, i0));
        groups.push_back({b, h, i0, keys * rows + p.d});
      }
    }
  }
  const int64_t per = roundUp(FwdScratch::floats(p.d, p.dv, tileK, nsub), 16);
  Floats scratch(per * threads);
  if (!scratch.ok()) return kOutOfMemory;
  // A key permutation's gathered tile (K and V rows) per thread.
  const int64_t stagePer =
      a.permK != nullptr || p.blockTable != nullptr ? roundUp(tileK * (p.d + p.dv), 16) : 0;
  Floats stage(stagePer * threads);
  if (!stage.ok()) return kOutOfMemory;
  auto scratchOf = [&](int thread) {
    FwdScratch sc(scratch.get() + per * thread, p.d, p.dv, tileK);
    if (stagePer > 0) {
      sc.ks = stage.get() + stagePer * thread;
      sc.vs = sc.ks + tileK * p.d;
    }
    return sc;
  };
  if (p.streamKWorkers > 0) return fwdStreamK<Norm, M>(p, a, tileK, groups, scratchOf);
  if (splits == 1) {
    sortByCostPerHead(groups);
    auto body = [&](int64_t t, int thread) {
      const Task& task = groups[t];
      const FwdScratch sc = scratchOf(thread);
      fwdTask<Norm, M>(p, a, task.b, task.h, task.x0, nsub, tileK, sc);
    };
    parallel(static_cast<int64_t>(groups.size()), body);
    return nullptr;
  }
  // Split-K: tasks (group, split), then one combine per group.
  const int64_t ngroups = static_cast<int64_t>(groups.size());
  const int64_t partStride = nsub * fwdPartialFloats(p.dv);
  Floats parts(ngroups * splits * partStride);
  if (!parts.ok()) return kOutOfMemory;
  std::vector<Task> tasks;
  tasks.reserve(ngroups * splits);
  for (int64_t gi = 0; gi < ngroups; gi++) {
    for (int64_t sp = 0; sp < splits; sp++) {
      Task t = groups[gi];
      t.cost = t.cost / splits + p.d;
      t.group = gi;
      t.split = sp;
      tasks.push_back(t);
    }
  }
  sortByCostPerHead(tasks);
  auto body = [&](int64_t t, int thread) {
    const Task& task = tasks[t];
    const FwdScratch sc = scratchOf(thread);
    fwdSplitTask<Norm, M>(p, a, task.b, task.h, task.x0, nsub, task.split, splits, tileK, sc,
                          parts.get() + (task.group * splits + task.split) * partStride);
  };
  parallel(static_cast<int64_t>(tasks.size()), body);
  auto combine = [&](int64_t gi, int thread) {
    const Task& task = groups[gi];
    FwdScratch sc(scratch.get() + per * thread, p.d, p.dv, tileK);
    fwdCombineTask<Norm, M>(p, a, task.b, task.h, task.x0, nsub, splits, sc,
                            parts.get() + gi * splits * partStride);
  };
  parallel(ngroups, combine);
  return nullptr;
}

// The instantiation of the problem's hooks.
inline const char* flashForward(const AttnProblem& problem, const FlashForwardArgs& a) {
  RabLutStore lut;
  const AttnProblem p = withRabLut(problem, lut);
  // Few query rows per sequence: keys in the lanes, GQA heads together (flash_decode.h).
  if (decodeEligible(p, a))
    return p.normalize == Normalize::kSigmoid ? flashDecode<Sigmoid>(p, a)
           : p.normalize == Normalize::kSilu  ? flashDecode<Silu>(p, a)
                                              : flashDecode<Softmax>(p, a);
  const bool mods = p.numMods > 0;
  if (p.normalize == Normalize::kSigmoid)
    return mods ? flashForwardImpl<Sigmoid, Mods>(p, a) : flashForwardImpl<Sigmoid, NoMods>(p, a);
  if (p.normalize == Normalize::kSilu)
    return mods ? flashForwardImpl<Silu, Mods>(p, a) : flashForwardImpl<Silu, NoMods>(p, a);
  return mods ? flashForwardImpl<Softmax, Mods>(p, a) : flashForwardImpl<Softmax, NoMods>(p, a);
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
