// FlashAttention-2 backward (Dao, 2023, Algorithm 2) on the CPU. One task owns a block of
// Bk = kBwdNV * V::L keys of one (batch, kv head): its dK and dV are summed over the query
// heads of the GQA group and written once, so no two tasks touch the same dK/dV rows. Keys
// run along the SIMD lanes; P is recomputed from Q, K and the forward's LSE, with
// D_i = rowsum(dO_i * O_i). dQ receives contributions from every key block, so each thread
// accumulates into its own dQ buffer and the buffers are summed. To keep that buffer O(N d) per
// thread (not O(B H N d)), the query heads are processed in waves of at most
// max(maxSeqQ, kBwdWaveRows) rows: each thread's buffer covers one wave, which is reduced into
// dQ before the next starts. A GQA group split between waves adds its later heads' dK and dV
// to the earlier ones'.
// Templated on the skeleton's hooks (flash_hooks.h): Softmax (dS = P (dP - D), with dsinks from
// the D pre-pass when the problem has sinks) or a pointwise one (Sigmoid: dS = dP w (1 - w);
// Silu: dS = dP c sig(s) (1 + s (1 - sig(s))); no pre-pass, no LSE), and NoMods or the problem's built-in mods (dS times each mod's derivative).
// Permuted tiles (engine.h permQ / permK; null = the plain path): a task's key rows are staged
// through permK and its dK / dV rows stored through it (the task owns them); each query tile's
// Q and dO rows are gathered through permQ, D and LSE are prepared in the tiled order, and dQ
// rows are reduced into their permQ rows.
// Parameters per ISA: kBwdNV, kBwdMR, kBwdTileQ, kDqMR, kDqCV.
#pragma once

#include <limits>
#include <type_traits>
#include <cmath>

#include "flash_hooks.h"

namespace attnkit {
namespace ATTNKIT_NS {

constexpr int64_t kBwdBk = kBwdNV * V::L;
// Rows of dQ partial sums per thread and wave (at least one head's): a few MB at d = 128, so
// waves are few and each still has enough key-block tasks to balance the threads.
constexpr int64_t kBwdWaveRows = 4096;

// out[r][lanes] = mul * sum_c X[r][c] * Y^T[c][lanes] for R rows of X (Q or dO, read in place).
template <int R>
struct BwdRowScores {
  static void run(int64_t d, const float* x, int64_t xRow, const float* yt, float* out,
                  float mul) {
    V acc[R][kBwdNV];
    for (int r = 0; r < R; r++)
      for (int v = 0; v < kBwdNV; v++) acc[r][v] = V::zero();
    for (int64_t c = 0; c < d; c++) {
      V y[kBwdNV];
      for (int v = 0; v < kBwdNV; v++) y[v] = V::load(yt + c * kBwdBk + v * V::L);
      for (int r = 0; r < R; r++) {
        V xv = V::set1(x[r * xRow + c]);
        for (int v = 0; v < kBwdNV; v++) acc[r][v] = V::fma(xv, y[v], acc[r][v]);
      }
    }
    const V vm = V::set1(mul);
    for (int r = 0; r < R; r++)
      for (int v = 0; v < kBwdNV; v++) (vm * acc[r][v]).store(out + r * kBwdBk + v * V::L);
  }
};

// T[r][lanes] += sum_i X[i][r] * M[i][lanes] for R columns of X: dV^T += dO^T P, dK^T += Q^T dS.
template <int R>
struct BwdAccT {
  static void run(int64_t rows, const float* x, int64_t xRow, const float* mat, float* t) {
    V acc[R][kBwdNV];
    for (int r = 0; r < R; r++)
      for (int v = 0; v < kBwdNV; v++) acc[r][v] = V::load(t + r * kBwdBk + v * V::L);
    for (int64_t i = 0; i < rows; i++) {
      V mv[kBwdNV];
      for (int v = 0; v < kBwdNV; v++) mv[v] = V::load(mat + i * kBwdBk + v * V::L);
      const float* xi = x + i * xRow;
      for (int r = 0; r < R; r++) {
        V xv = V::set1(xi[r]);
        for (int v = 0; v < kBwdNV; v++) acc[r][v] = V::fma(xv, mv[v], acc[r][v]);
      }
    }
    for (int r = 0; r < R; r++)
      for (int v = 0; v < kBwdNV; v++) acc[r][v].store(t + r * kBwdBk + v * V::L);
  }
};

// G[r][cols] += sum_j dS[r][j] * K[j][cols] for R rows and CV vectors of columns (dQ).
template <int CV>
struct BwdDq {
  template <int R>
  struct Rows {
    static void run(int64_t keys, const float* ds, const float* kp, int64_t dpad, float* g,
                    int64_t gRow) {
      V acc[R][CV];
      for (int r = 0; r < R; r++)
        for (int u = 0; u < CV; u++) acc[r][u] = V::load(g + r * gRow + u * V::L);
      for (int64_t j = 0; j < keys; j++) {
        V kv[CV];
        for (int u = 0; u < CV; u++) kv[u] = V::load(kp + j * dpad + u * V::L);
        for (int r = 0; r < R; r++) {
          V s = V::set1(ds[r * kBwdBk + j]);
          for (int u = 0; u < CV; u++) acc[r][u] = V::fma(s, kv[u], acc[r][u]);
        }
      }
      for (int r = 0; r < R; r++)
        for (int u = 0; u < CV; u++) acc[r][u].store(g + r * gRow + u * V::L);
    }
  };
  static ATTNKIT_ALWAYS_INLINE void run(int64_t rows, int64_t keys, const float* ds,
                                        const float* kp, int64_t dpad, float* g, int64_t gRow) {
    int64_t r = 0;
    for (; r + kDqMR <= rows; r += kDqMR)
      Rows<kDqMR>::run(keys, ds + r * kBwdBk, kp, dpad, g + r * gRow, gRow);
    if (r < rows)
      withRows<Rows, kDqMR>(rows - r, keys, ds + r * kBwdBk, kp, dpad, g + r * gRow, gRow);
  }
};

template <int CV>
ATTNKIT_ALWAYS_INLINE void bwdDqCols(int64_t cv, int64_t rows, int64_t keys, const float* ds, const float* kp,
                      int64_t dpad, float* g, int64_t gRow) {
  if constexpr (CV == 1) {
    BwdDq<1>::run(rows, keys, ds, kp, dpad, g, gRow);
  } else {
    if (cv == CV)
      BwdDq<CV>::run(rows, keys, ds, kp, dpad, g, gRow);
    else
      bwdDqCols<CV - 1>(cv, rows, keys, ds, kp, dpad, g, gRow);
  }
}

// BwdRowScores over `rows` rows: whole register blocks, then the remainder.
inline void bwdScores(int64_t rows, int64_t d, const float* x, int64_t xRow, const float* yt,
                      float* out, float mul) {
  int64_t r = 0;
  for (; r + kBwdMR <= rows; r += kBwdMR)
    BwdRowScores<kBwdMR>::run(d, x + r * xRow, xRow, yt, out + r * kBwdBk, mul);
  if (r < rows)
    withRows<BwdRowScores, kBwdMR>(rows - r, d, x + r * xRow, xRow, yt, out + r * kBwdBk, mul);
}

struct BwdScratch {
  float* kt;    // d x Bk, K^T of the block
  float* vt;    // dv x Bk, V^T
  float* kp;    // Bk x dpad, K rows padded to whole vectors (dQ's right operand)
  float* dkt;   // d x Bk
  float* dvt;   // dv x Bk
  float* pm;    // tileQ x Bk, P
  float* ds;    // tileQ x Bk, dP then dS
  float* jidx;  // Bk, key index of each lane
  float* kept;  // Bk, block-sparse flag of each lane for the current query block
  float* gm;    // tileQ x Bk when the hooks need it: d weight / d score (pointwise dw/ds,
                // times the score mods' derivatives)
  // Permuted queries only (engine.h permQ): the query tile's Q and dO rows gathered through the
  // index (tileQ x d, tileQ x dv), from a buffer of their own; null otherwise.
  float* qs = nullptr;
  float* dos = nullptr;
  float* qsc = nullptr;  // tileQ x d: the tile's Q rows times scale log2 e (S, as the forward)
  // HSTU's rab with grad (engine.h rabDPos / rabDTime): this thread's partial table gradients
  // (rabGradDoubles), summed over the threads at the end; null otherwise.
  double* rabAcc = nullptr;
  int32_t* tcol = nullptr;  // with dTimestampTable: tileQ x Bk time columns of the query tile
  static int64_t floats(int64_t d, int64_t dv, int64_t dpad, int64_t tileQ, bool withG) {
    return (2 * d + 2 * dv + dpad + (withG ? 3 : 2) * tileQ + 2) * kBwdBk;
  }
  BwdScratch(float* base, int64_t d, int64_t dv, int64_t dpad, int64_t tileQ)
      : kt(base),
        vt(kt + d * kBwdBk),
        kp(vt + dv * kBwdBk),
        dkt(kp + dpad * kBwdBk),
        dvt(dkt + d * kBwdBk),
        pm(dvt + dv * kBwdBk),
        ds(pm + tileQ * kBwdBk),
        jidx(ds + tileQ * kBwdBk),
        kept(jidx + kBwdBk),
        gm(kept + kBwdBk) {}
};

struct BwdShared {
  const AttnProblem& p;
  const FlashBackwardArgs& a;
  const float* dRow;  // D_i, indexed like lse
  const float* lse;   // LSE_i (natural units), indexed like lse
  int64_t dpad, tileQ;
};

// Whether the backward keeps d weight / d score per element (BwdScratch::gm).
inline bool bwdNeedsG(const AttnProblem& p) {
  if (p.normalize == Normalize::kSigmoid || p.normalize == Normalize::kSilu) return true;
  for (int t = 0; t < p.numMods; t++)
    if (p.mods[t].kind == ScoreModKind::kSoftcap) return true;
  return false;
}

// One key block of one (batch, kv head) against the query heads [hh0, hh1) of its group; their
// dQ partial sums start at row `row` of this thread's wave buffer dqAcc (nq rows of dpad each).
struct BwdTask {
  int64_t b, kvh, j0, cost, hh0, hh1, row;
};

// Rows with |LSE| up to this take bwdProb's fast path.
constexpr float kFastLse = 32.0f;

// P of a vector of scores s2 (log2 units, bit for bit the forward's) of a row with LSE lse
// (lse2 = fl32(lse log2 e)), clamped to P <= 1 (true in exact arithmetic; rounding must not lift
// a probability above 1, let alone overflow it: exp2v's upper clamp at 0 does it for free).
// Exact path: e^t with t = fl32(s2 ln 2) - LSE, the same product lseOf (flash_common.h) took of
// the row's max, so a one-hot row gets P = 1 exactly at any logit; the product is rounded on its
// own (an fma with -LSE would leave its rounding in t: P = 0.8 at scores of 1e6). Fast path,
// for |LSE| <= kFastLse: 2^(s2 - lse2), as before the exact path existed (2 ops fewer a score,
// 13% of the backward at D 64); lse2's rounding moves t by at most 32 log2 e 2^-24 = 2.8e-6,
// below what the f32 scores themselves carry. exp2v maps NaN to 0; a NaN t (NaN input, or a
// row the forward poisoned: LSE = NaN, which takes the exact path) stays NaN so the gradients
// it reaches come out NaN, as in the reference.
template <bool kExact>
ATTNKIT_ALWAYS_INLINE V bwdProb(V s2, V lse, V lse2, V nan) {
  if constexpr (kExact) {
    const V t = V::opaque(s2 * V::set1(kLn2f)) - lse;
    return V::keep_in(exp2v(t * V::set1(kLog2e), 0.0f), t, -kInf, kInf, nan);
  } else {
    const V t = s2 - lse2;
    return V::keep_in(exp2v(t, 0.0f), t, -kInf, kInf, nan);
  }
}

// Softmax policy on the rows of a tile: P = e^(S - LSE) (masked entries 0) in place.
ATTNKIT_ALWAYS_INLINE void bwdSoftmaxP(const AttnProblem& p, const Seq& s, const uint8_t* bs, Vis vis,
                        const float* lse, int64_t i0, int64_t nr, int64_t j0, int64_t kcols,
                        const BwdScratch& sc) {
  int64_t keptBlock = -1;
  const V nan = V::set1(std::numeric_limits<float>::quiet_NaN());
  // One row's P in place, through bwdProb's exact or fast path.
  auto rowP = [&](auto exactTag, int64_t i, float* row) {
    constexpr bool kExact = decltype(exactTag)::value;
    const float l = lse[i0 + i];
    const V li = V::set1(l), l2 = V::set1(l * kLog2e);
    if (vis == Vis::kFull) {
      for (int u = 0; u < kBwdNV; u++)
        bwdProb<kExact>(V::load(row + u * V::L), li, l2, nan).store(row + u * V::L);
      return;
    }
    const float lo = static_cast<float>(keyLo(p, s, i0 + i));
    const float hi = static_cast<float>(keyHi(p, s, i0 + i) - 1);
    for (int u = 0; u < kBwdNV; u++) {
      V e = bwdProb<kExact>(V::load(row + u * V::L), li, l2, nan);
      e = V::keep_in(e, V::load(sc.jidx + u * V::L), lo, hi, V::zero());
      if (bs != nullptr) e = V::keep_nonzero(e, V::load(sc.kept + u * V::L), V::zero());
      e.store(row + u * V::L);
    }
  };
  for (int64_t i = 0; i < nr; i++) {
    if (vis != Vis::kFull && bs != nullptr && (i0 + i) / p.bsBlockQ != keptBlock) {
      keptBlock = (i0 + i) / p.bsBlockQ;
      for (int64_t j = 0; j < kBwdBk; j++) {
        sc.kept[j] = j < kcols && bs[keptBlock * p.bsNbk + (j0 + j) / p.bsBlockK] != 0;
      }
    }
    float* row = sc.pm + i * kBwdBk;
    if (std::fabs(lse[i0 + i]) <= kFastLse)
      rowP(std::false_type{}, i, row);
    else
      rowP(std::true_type{}, i, row);
    if (p.hstuTargets != nullptr) {
      for (int64_t j = 0; j < kcols; j++)
        if (!hstuAllowed(p, s.b, i0 + i + s.off, j0 + j, s.nk)) row[j] = 0.0f;
    }
  }
}

// Pointwise policies on the rows of a tile: masked scores -> -inf, then W = Norm::weight(S + b)
// in place and gm *= dw/ds (masked entries give 0 and 0).
template <class Norm>
ATTNKIT_ALWAYS_INLINE void bwdPointwiseW(const AttnProblem& p, const Seq& s, const uint8_t* bs,
                        Vis vis, float bias2, float factor, int64_t i0, int64_t nr, int64_t j0, int64_t kcols,
                        bool gSet, const BwdScratch& sc) {
  int64_t keptBlock = -1;
  const V b = V::set1(bias2), neg = V::set1(-kInf);
  for (int64_t i = 0; i < nr; i++) {
    float* row = sc.pm + i * kBwdBk;
    float* g = sc.gm + i * kBwdBk;
    float lo = -kInf, hi = kInf;
    if (vis == Vis::kPartial) {
      lo = static_cast<float>(keyLo(p, s, i0 + i));
      hi = static_cast<float>(keyHi(p, s, i0 + i) - 1);
      if (bs != nullptr && (i0 + i) / p.bsBlockQ != keptBlock) {
        keptBlock = (i0 + i) / p.bsBlockQ;
        for (int64_t j = 0; j < kBwdBk; j++) {
          sc.kept[j] = j < kcols && bs[keptBlock * p.bsNbk + (j0 + j) / p.bsBlockK] != 0;
        }
      }
    }
    // The HSTU mask (every visited tile is partial with it): refused pairs -> -inf, as the band's.
    if (p.hstuTargets != nullptr) {
      for (int64_t j = 0; j < kcols; j++)
        if (!hstuAllowed(p, s.b, i0 + i + s.off, j0 + j, s.nk)) row[j] = -kInf;
    }
    for (int u = 0; u < kBwdNV; u++) {
      V x = V::load(row + u * V::L);
      if (vis == Vis::kPartial) {
        x = V::keep_in(x, V::load(sc.jidx + u * V::L), lo, hi, neg);
        if (bs != nullptr) x = V::keep_nonzero(x, V::load(sc.kept + u * V::L), neg);
      }
      V wd;
      Norm::weight(x + b, &wd, factor).store(row + u * V::L);
      (gSet ? wd * V::load(g + u * V::L) : wd).store(g + u * V::L);
    }
  }
}

template <class Norm, class M>
ATTNKIT_NOINLINE void bwdBlock(const BwdShared& sh, const BwdTask& task, const BwdScratch& sc,
                     float* dqAcc) {
  const int64_t b = task.b, kvh = task.kvh, j0 = task.j0;
  const AttnProblem& p = sh.p;
  const FlashBackwardArgs& a = sh.a;
  const Seq s = seqOf(p, b);
  const int64_t kcols = imin(kBwdBk, s.nk - j0);
  const int64_t j1 = j0 + kcols;
  const int64_t d = p.d, dv = p.dv, dpad = sh.dpad;
  const int64_t qRow = qRowStride(p, d), kRow = kRowStride(p, d);
  const int64_t vRow = kRowStride(p, dv), oRow = qRowStride(p, dv);
  const float* k0 = a.k + kBase(p, b, kvh, d);
  const float* v0 = a.v + kBase(p, b, kvh, dv);
  // Tiled key j0 + j is key pk[j0 + j] under a key permutation (this task owns tiled keys
  // [j0, j1) of (b, kvh), so it owns their original rows too: dK / dV stay plain stores).
  const int32_t* pk = a.permK != nullptr ? a.permK + kIdxBase(p, b, kvh) : nullptr;
  auto keyRow = [&](int64_t j) { return pk != nullptr ? pk[j0 + j] : j0 + j; };

  for (int64_t j = 0; j < kBwdBk; j++) {
    const bool in = j < kcols;
    const int64_t row = in ? keyRow(j) : 0;
    const float* k = k0 + row * kRow;
    const float* v = v0 + row * vRow;
    for (int64_t c = 0; c < d; c++) sc.kt[c * kBwdBk + j] = in ? k[c] : 0.0f;
    for (int64_t c = 0; c < dv; c++) sc.vt[c * kBwdBk + j] = in ? v[c] : 0.0f;
    for (int64_t c = 0; c < dpad; c++) sc.kp[j * dpad + c] = in && c < d ? k[c] : 0.0f;
    sc.jidx[j] = static_cast<float>(j0 + j);
  }
  for (int64_t i = 0; i < d * kBwdBk; i++) sc.dkt[i] = 0.0f;
  for (int64_t i = 0; i < dv * kBwdBk; i++) sc.dvt[i] = 0.0f;

  const float qScale = p.scale * kLog2e;
  const int64_t rowStart = p.right < 0 ? 0 : imax(0, j0 - s.off - p.right);
  const int64_t rowEnd = p.left < 0 ? s.nq : imin(s.nq, j1 - s.off + p.left);
  const float bias2 = std::is_same_v<Norm, Sigmoid> ? p.sigmoidBias[b] * kLog2e : 0.0f;
  for (int64_t hh = task.hh0; hh < task.hh1; hh++) {
    const int64_t h = kvh * p.group + hh;
    const uint8_t* bs = sparseBase(p, b, h);
    HeadMods mods;
    if constexpr (M::kActive) mods = headMods(p, b, h);
    RabHead rab = rabHead(p, b, h);
    if (rab.on && sc.rabAcc != nullptr) rabGradRows(p, h, sc.rabAcc, rab);
    int32_t* tcol = rab.dtime != nullptr ? sc.tcol : nullptr;
    // d weight / d score kept per element: the pointwise dw/ds and the softcaps' derivatives.
    const bool useG = Norm::kPointwise || (M::kActive && mods.softcap);
    const float* q = a.q + qBase(p, b, h, d);
    const float* dO = a.dO + qBase(p, b, h, dv);
    const float* dRow = Norm::kPointwise ? nullptr : sh.dRow + lseBase(p, b, h);
    const float* lse = Norm::kPointwise ? nullptr : sh.lse + lseBase(p, b, h);
    const int32_t* pq = a.permQ != nullptr ? a.permQ + lseBase(p, b, h) : nullptr;
    const int64_t gRow = dpad;
    float* g = dqAcc + (task.row + (hh - task.hh0) * s.nq) * dpad;
    const int64_t block = bs != nullptr ? p.bsBlockQ : 0;
    // A bias with grad (engine.h ScoreMod::dbias): this (b, h)'s plane of dbias, or null.
    float* dbias = nullptr;
    int64_t dbRow = 0;
    for (int32_t t = 0; t < p.numMods; t++) {
      const ScoreMod& sm = p.mods[t];
      if (sm.kind == ScoreModKind::kBias && sm.dbias != nullptr) {
        dbias = sm.dbias + b * sm.dbBatchStride + h * sm.dbHeadStride + j0;
        dbRow = sm.rowStride;
      }
    }
    for (int64_t i0 = rowStart; i0 < rowEnd;) {
      const int64_t i1 = tileEnd(i0, rowEnd, sh.tileQ, block);
      const Vis vis = classifyTile(p, s, bs, i0, i1, j0, j1);
      if (vis == Vis::kSkip) {
        i0 = i1;
        continue;
      }
      const int64_t nr = i1 - i0;
      const float* qi = q + i0 * qRow;
      const float* dOi = dO + i0 * oRow;
      int64_t qiRow = qRow, dOiRow = oRow;
      if (pq != nullptr) {
        // Tiled rows [i0, i1) are query rows pq[i]: gather them (Q and dO) once per tile.
        for (int64_t i = 0; i < nr; i++) {
          const float* qr = q + pq[i0 + i] * qRow;
          const float* gr = dO + pq[i0 + i] * oRow;
          std::copy(qr, qr + d, sc.qs + i * d);
          std::copy(gr, gr + dv, sc.dos + i * dv);
        }
        qi = sc.qs;
        dOi = sc.dos;
        qiRow = d;
        dOiRow = dv;
      }
      // S as the forward computed it, bit for bit: Q pre-scaled by scale log2 e in f32, then
      // the same fma chain over c from 0 (FwdScores: fma(k_c, q_c, acc); here fma(q_c, k_c,
      // acc), the same rounding). Scaling after the dot product instead rounds differently,
      // and at large logits exp(S - LSE) then exceeds 1 (issue 9 item 2).
      for (int64_t i = 0; i < nr; i++)
        for (int64_t c = 0; c < d; c++) sc.qsc[i * d + c] = qi[i * qiRow + c] * qScale;
      bwdScores(nr, d, sc.qsc, d, sc.kt, sc.pm, 1.0f);
      // HSTU's rab, as the forward adds it (first, the same fma): P / W below, the exact
      // large-logit path included, see the forward's scores.
      if (rab.on) bwdRab(rab, i0 + s.off, nr, j0, kcols, sc.pm, tcol, kBwdBk);
      if constexpr (M::kActive) {
        for (int64_t i = 0; i < nr; i++) {
          bwdMods<kBwdNV>(mods, i0 + i, s.off, j0, kcols, sc.jidx, sc.pm + i * kBwdBk,
                          mods.softcap ? sc.gm + i * kBwdBk : nullptr);
        }
      }
      if constexpr (Norm::kPointwise)
        bwdPointwiseW<Norm>(p, s, bs, vis, bias2, p.siluFactor, i0, nr, j0, kcols, M::kActive && mods.softcap, sc);
      else
        bwdSoftmaxP(p, s, bs, vis, lse, i0, nr, j0, kcols, sc);
      bwdScores(nr, dv, dOi, dOiRow, sc.vt, sc.ds, 1.0f);
      for (int64_t i = 0; i < nr; i++) {
        float* prow = sc.pm + i * kBwdBk;
        float* drow = sc.ds + i * kBwdBk;
        const float* grow = sc.gm + i * kBwdBk;
        if constexpr (Norm::kPointwise) {
          // dS = dP dw/ds (times the mods' derivatives, folded into gm).
          for (int u = 0; u < kBwdNV; u++)
            (V::load(drow + u * V::L) * V::load(grow + u * V::L)).store(drow + u * V::L);
          continue;
        }
        const V di = V::set1(dRow[i0 + i]);
        if (M::kActive && useG) {
          for (int u = 0; u < kBwdNV; u++) {
            V ds = V::load(prow + u * V::L) * (V::load(drow + u * V::L) - di);
            (ds * V::load(grow + u * V::L)).store(drow + u * V::L);
          }
          continue;
        }
        for (int u = 0; u < kBwdNV; u++) {
          V ds = V::load(prow + u * V::L) * (V::load(drow + u * V::L) - di);
          ds.store(drow + u * V::L);
        }
      }
      if (rab.dpos != nullptr || rab.dtime != nullptr) {
        // dS is dZ (the rab precedes every mod; their chain rule is in dS), 0 at masked pairs.
        for (int64_t i = 0; i < nr; i++)
          bwdRabGrad(rab, i0 + i + s.off, j0, kcols, sc.ds + i * kBwdBk,
                     tcol != nullptr ? tcol + i * kBwdBk : nullptr);
      }
      if (dbias != nullptr) {
        // dS is d loss / d bias (the mods before a bias with grad are additive): each
        // (b, h, i, j) belongs to this one task, so plain stores (masked keys hold 0).
        for (int64_t i = 0; i < nr; i++)
          std::copy(sc.ds + i * kBwdBk, sc.ds + i * kBwdBk + kcols, dbias + (i0 + i) * dbRow);
      }
      int64_t c = 0;
      for (; c + kBwdMR <= dv; c += kBwdMR)
        BwdAccT<kBwdMR>::run(nr, dOi + c, dOiRow, sc.pm, sc.dvt + c * kBwdBk);
      if (c < dv)
        withRows<BwdAccT, kBwdMR>(dv - c, nr, dOi + c, dOiRow, sc.pm, sc.dvt + c * kBwdBk);
      c = 0;
      for (; c + kBwdMR <= d; c += kBwdMR)
        BwdAccT<kBwdMR>::run(nr, qi + c, qiRow, sc.ds, sc.dkt + c * kBwdBk);
      if (c < d)
        withRows<BwdAccT, kBwdMR>(d - c, nr, qi + c, qiRow, sc.ds, sc.dkt + c * kBwdBk);
      const int64_t nv = dpad / V::L;
      for (int64_t cv = 0; cv < nv; cv += kDqCV) {
        bwdDqCols<kDqCV>(imin(kDqCV, nv - cv), nr, kcols, sc.ds, sc.kp + cv * V::L, dpad,
                         g + i0 * gRow + cv * V::L, gRow);
      }
      i0 = i1;
    }
  }

  float* dk0 = a.dk + kBase(p, b, kvh, d);
  float* dv0 = a.dv + kBase(p, b, kvh, dv);
  if (task.hh0 == 0) {
    for (int64_t j = 0; j < kcols; j++) {
      float* dk = dk0 + keyRow(j) * kRow;
      float* dvOut = dv0 + keyRow(j) * vRow;
      for (int64_t c = 0; c < d; c++) dk[c] = p.scale * sc.dkt[c * kBwdBk + j];
      for (int64_t c = 0; c < dv; c++) dvOut[c] = sc.dvt[c * kBwdBk + j];
    }
  } else {
    for (int64_t j = 0; j < kcols; j++) {
      float* dk = dk0 + keyRow(j) * kRow;
      float* dvOut = dv0 + keyRow(j) * vRow;
      for (int64_t c = 0; c < d; c++) dk[c] += p.scale * sc.dkt[c * kBwdBk + j];
      for (int64_t c = 0; c < dv; c++) dvOut[c] += sc.dvt[c * kBwdBk + j];
    }
  }
}

// A query head (b, h) of a wave; its dQ partial sums start at row `row` of the wave buffer.
struct BwdUnit {
  int64_t b, h, row;
};
// Units [u0, u1) of the plan, `rows` rows of dQ partial sums in all.
struct BwdWave {
  int64_t u0, u1, rows;
};

// Query heads in (batch, head) order, cut into waves of at most max(maxSeqQ, kBwdWaveRows)
// rows; a head of an empty sequence still joins a wave, so its dK and dV get written (zeros).
struct BwdPlan {
  std::vector<BwdUnit> units;
  std::vector<BwdWave> waves;
  int64_t waveRows = 0;  // rows of the largest wave: each thread's buffer
  explicit BwdPlan(const AttnProblem& p) {
    const int64_t cap = imax(p.maxSeqQ, kBwdWaveRows);
    BwdWave w{0, 0, 0};
    for (int64_t b = 0; b < p.batch; b++) {
      const int64_t nq = p.seqQ[b];
      for (int64_t h = 0; h < p.hq; h++) {
        if (w.rows > 0 && w.rows + nq > cap) {
          waves.push_back(w);
          w = {w.u1, w.u1, 0};
        }
        units.push_back({b, h, w.rows});
        w.rows += nq;
        w.u1++;
        waveRows = imax(waveRows, w.rows);
      }
    }
    if (w.u1 > w.u0) waves.push_back(w);
  }
};

inline int64_t bwdBlockScratchFloats(const AttnProblem& p, int64_t dpad, int64_t tileQ) {
  return roundUp(BwdScratch::floats(p.d, p.dv, dpad, tileQ, bwdNeedsG(p)), 16);
}

// Floats of the softmax pre-pass: D_i and LSE in log2 units per lse entry, and with sinks one
// partial dsinks per (batch, head); none for the pointwise sigmoid and silu.
inline int64_t bwdSharedFloats(const AttnProblem& p) {
  if (p.normalize == Normalize::kSigmoid || p.normalize == Normalize::kSilu) return 0;
  const int64_t nLse = p.thd ? p.hq * p.totalQ : p.batch * p.hq * p.maxSeqQ;
  return 2 * nLse + (p.sinks != nullptr ? p.batch * p.hq : 0);
}

// Scratch of flashBackward in floats: per thread (wave dQ buffer + block buffers) and shared.
// A query permutation (permQ, an input, unknown here) adds tileQ (d + dv) floats per thread.
inline void flashBackwardScratch(const AttnProblem& p, int64_t* perThread, int64_t* shared) {
  const int64_t tileQ = p.tileQ > 0 ? p.tileQ : kBwdTileQ;
  const int64_t dpad = roundUp(p.d, V::L);
  const BwdPlan plan(p);
  *perThread = plan.waveRows * dpad + bwdBlockScratchFloats(p, dpad, tileQ) +
               roundUp(tileQ * p.d, 16) + 2 * rabGradDoubles(p) +
               (p.rabDTime != nullptr ? roundUp(tileQ * kBwdBk, 16) : 0);
  *shared = bwdSharedFloats(p);
}

template <class Norm, class M>
inline const char* flashBackwardImpl(const AttnProblem& p, const FlashBackwardArgs& a) {
  const int threads = poolThreads();
  const int64_t tileQ = p.tileQ > 0 ? p.tileQ : kBwdTileQ;
  const int64_t dpad = roundUp(p.d, V::L);
  const int64_t nLse = p.thd ? p.hq * p.totalQ : p.batch * p.hq * p.maxSeqQ;
  const BwdPlan plan(p);
  const int64_t accPer = plan.waveRows * dpad;
  const int64_t per = bwdBlockScratchFloats(p, dpad, tileQ);
  Floats prep(bwdSharedFloats(p));
  Floats dqAcc(static_cast<int64_t>(threads) * accPer);
  Floats scratch(per * threads);
  Floats covered(p.thd ? p.totalQ : 0);
  // Per thread: the query tile's Q rows scaled as the forward scales them (tileQ d), and
  // under a query permutation the gathered tile (Q and dO rows).
  const int64_t stagePer = roundUp(tileQ * p.d, 16) +
                           (a.permQ != nullptr ? roundUp(tileQ * (p.d + p.dv), 16) : 0);
  Floats stage(stagePer * threads);
  // HSTU's rab gradients: per-thread partial tables in f64 (rabGradDoubles each, 2 floats a
  // double; tasks run in parallel and share table columns), summed after the waves.
  const int64_t rabPer = rabGradDoubles(p);
  Floats rabAcc(2 * rabPer * threads);
  const int64_t tcolPer = p.rabDTime != nullptr ? roundUp(tileQ * kBwdBk, 16) : 0;
  Floats tcols(tcolPer * threads);
  if (!prep.ok() || !dqAcc.ok() || !scratch.ok() || !covered.ok() || !stage.ok() ||
      !rabAcc.ok() || !tcols.ok())
    return kOutOfMemory;
  double* rabParts = reinterpret_cast<double*>(rabAcc.get());
  for (int64_t e = 0; e < rabPer * threads; e++) rabParts[e] = 0.0;
  BwdShared sh{p, a, prep.get(), Norm::kPointwise ? nullptr : prep.get() + nLse, dpad, tileQ};

  if constexpr (!Norm::kPointwise) {
    // D_i = dO_i . O_i (FA2 eq. for dS), and LSE; rows of the lse layout that no
    // sequence covers are never read. With sinks, the partial dsinks of (b, h):
    // sum_i e^(sink_h - LSE_i) D_i (the sink's probability in row i times D_i).
    float* sinkPart = prep.get() + 2 * nLse;
    auto prepare = [&](int64_t bh, int) {
      const int64_t b = bh / p.hq, h = bh % p.hq;
      const Seq s = seqOf(p, b);
      const int64_t oRow = qRowStride(p, p.dv);
      const float* o = a.o + qBase(p, b, h, p.dv);
      const float* dO = a.dO + qBase(p, b, h, p.dv);
      const int64_t base = lseBase(p, b, h);
      // D and LSE are kept in the tiled order: tiled row i is query row pq[i] under a query
      // permutation.
      const int32_t* pq = a.permQ != nullptr ? a.permQ + base : nullptr;
      double sink = 0.0;
      for (int64_t i = 0; i < s.nq; i++) {
        const int64_t r = pq != nullptr ? pq[i] : i;
        double acc = 0.0;
        for (int64_t c = 0; c < p.dv; c++)
          acc += static_cast<double>(o[r * oRow + c]) * dO[r * oRow + c];
        const float lse = a.lse[base + r];
        prep.get()[base + i] = static_cast<float>(acc);
        prep.get()[nLse + base + i] = lse;
        if (p.sinks != nullptr && lse > -kInf)
          sink += std::exp(static_cast<double>(p.sinks[h]) - lse) * acc;
      }
      if (p.sinks != nullptr) sinkPart[bh] = static_cast<float>(sink);
    };
    parallel(p.batch * p.hq, prepare);
    if (p.sinks != nullptr) {
      for (int64_t h = 0; h < p.hq; h++) {
        double sum = 0.0;
        for (int64_t b = 0; b < p.batch; b++) sum += sinkPart[b * p.hq + h];
        a.dsinks[h] = static_cast<float>(-sum);
      }
    }
  }

  // Rows of dQ's layout that no sequence covers get zeros (the waves write only covered rows).
  if (p.thd) {
    float* cov = covered.get();
    for (int64_t t = 0; t < p.totalQ; t++) cov[t] = 0.0f;
    for (int64_t b = 0; b < p.batch; b++)
      for (int64_t i = 0; i < p.seqQ[b]; i++) cov[p.startQ[b] + i] = 1.0f;
    for (int64_t t = 0; t < p.totalQ; t++)
      if (cov[t] == 0.0f)
        for (int64_t c = 0; c < p.hq * p.d; c++) a.dq[t * p.hq * p.d + c] = 0.0f;
  } else {
    for (int64_t bh = 0; bh < p.batch * p.hq; bh++) {
      const int64_t nq = p.seqQ[bh / p.hq];
      float* x = a.dq + bh * p.maxSeqQ * p.d;
      for (int64_t i = nq * p.d; i < p.maxSeqQ * p.d; i++) x[i] = 0.0f;
    }
  }

  const int64_t chunk = 4096;
  const int64_t accTotal = static_cast<int64_t>(threads) * accPer;
  auto zero = [&](int64_t t, int) {
    float* x = dqAcc.get() + t * chunk;
    const int64_t n = imin(chunk, accTotal - t * chunk);
    for (int64_t i = 0; i < n; i++) x[i] = 0.0f;
  };
  parallel(ceilDiv(accTotal, chunk), zero);

  const int64_t qRow = qRowStride(p, p.d);
  std::vector<BwdTask> tasks;
  for (const BwdWave& w : plan.waves) {
    // Tasks: every key block of each (batch, kv head) the wave touches, against the wave's
    // heads of its group. Head by head, so the threads share one head's Q and dO in L3; the
    // largest first within a head, so the last tasks are short (causal rows differ by up to N).
    tasks.clear();
    for (int64_t u = w.u0; u < w.u1;) {
      const BwdUnit& first = plan.units[u];
      const int64_t kvh = first.h / p.group;
      int64_t v = u + 1;
      while (v < w.u1 && plan.units[v].b == first.b && plan.units[v].h / p.group == kvh) v++;
      const int64_t hh0 = first.h % p.group, hh1 = hh0 + (v - u);
      const Seq s = seqOf(p, first.b);
      for (int64_t j0 = 0; j0 < s.nk; j0 += kBwdBk) {
        const int64_t j1 = imin(s.nk, j0 + kBwdBk);
        const int64_t r0 = p.right < 0 ? 0 : imax(0, j0 - s.off - p.right);
        const int64_t r1 = p.left < 0 ? s.nq : imin(s.nq, j1 - s.off + p.left);
        const int64_t cost = imax(0, r1 - r0) * (hh1 - hh0) * kBwdBk + p.d;
        tasks.push_back({first.b, kvh, j0, cost, hh0, hh1, first.row});
      }
      u = v;
    }
    std::stable_sort(tasks.begin(), tasks.end(), [](const BwdTask& x, const BwdTask& y) {
      if (x.b != y.b) return x.b < y.b;
      if (x.kvh != y.kvh) return x.kvh < y.kvh;
      return x.cost > y.cost;
    });
    auto body = [&](int64_t t, int thread) {
      BwdScratch sc(scratch.get() + per * thread, p.d, p.dv, dpad, tileQ);
      sc.qsc = stage.get() + stagePer * thread;
      if (rabPer > 0) sc.rabAcc = rabParts + rabPer * thread;
      if (tcolPer > 0) sc.tcol = reinterpret_cast<int32_t*>(tcols.get() + tcolPer * thread);
      if (a.permQ != nullptr) {
        sc.qs = sc.qsc + roundUp(tileQ * p.d, 16);
        sc.dos = sc.qs + tileQ * p.d;
      }
      bwdBlock<Norm, M>(sh, tasks[t], sc, dqAcc.get() + thread * accPer);
    };
    parallel(static_cast<int64_t>(tasks.size()), body);

    // dQ = scale * sum over threads of the partial sums (in thread order), zeroing the partial
    // sums for the next wave.
    const int64_t rowsPer = 64;
    auto reduce = [&](int64_t t, int) {
      const int64_t r0 = t * rowsPer, r1 = imin(w.rows, r0 + rowsPer);
      int64_t u = w.u0;
      while (u + 1 < w.u1 && plan.units[u + 1].row <= r0) u++;
      for (int64_t r = r0; r < r1; r++) {
        while (u + 1 < w.u1 && plan.units[u + 1].row <= r) u++;
        const BwdUnit& un = plan.units[u];
        // Tiled row r - un.row is query row permQ[...] under a query permutation.
        const int64_t qr = a.permQ != nullptr ? a.permQ[lseBase(p, un.b, un.h) + r - un.row]
                                              : r - un.row;
        float* out = a.dq + qBase(p, un.b, un.h, p.d) + qr * qRow;
        float* part = dqAcc.get() + r * dpad;
        for (int64_t c = 0; c < p.d; c++) {
          out[c] = part[c];
          part[c] = 0.0f;
        }
        for (int th = 1; th < threads; th++) {
          float* pt = part + th * accPer;
          for (int64_t c = 0; c < p.d; c++) {
            out[c] += pt[c];
            pt[c] = 0.0f;
          }
        }
        for (int64_t c = 0; c < p.d; c++) out[c] *= p.scale;
      }
    };
    parallel(ceilDiv(w.rows, rowsPer), reduce);
  }
  if (rabPer > 0) {
    // The rab's table gradients: the threads' partials summed in thread order.
    for (int64_t e = 0; e < rabPer; e++) {
      double sum = 0.0;
      for (int th = 0; th < threads; th++) sum += rabParts[th * rabPer + e];
      const int64_t np = p.rabDPos != nullptr ? p.rabPosHeads * p.rabNumPos : 0;
      (e < np ? p.rabDPos[e] : p.rabDTime[e - np]) = static_cast<float>(sum);
    }
  }
  return nullptr;
}

// The instantiation of the problem's hooks.
inline const char* flashBackward(const AttnProblem& problem, const FlashBackwardArgs& a) {
  RabLutStore lut;
  const AttnProblem p = withRabLut(problem, lut);
  const bool mods = p.numMods > 0;
  if (p.normalize == Normalize::kSigmoid)
    return mods ? flashBackwardImpl<Sigmoid, Mods>(p, a) : flashBackwardImpl<Sigmoid, NoMods>(p, a);
  if (p.normalize == Normalize::kSilu)
    return mods ? flashBackwardImpl<Silu, Mods>(p, a) : flashBackwardImpl<Silu, NoMods>(p, a);
  return mods ? flashBackwardImpl<Softmax, Mods>(p, a) : flashBackwardImpl<Softmax, NoMods>(p, a);
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
