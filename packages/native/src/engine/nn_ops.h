// The nn ops (engine.h NnCall; @attnkit/nn's native backend): the kernels of packages/nn's
// Kernels table on f32 arrays. packages/nn/src/kernels/ts/*.ts are the spec; the comments here
// say only where the arithmetic differs from it. Elementwise loops are vectorised with V
// (simd.h: exp2v, tanhv, sigmoid2v) or left to the compiler; rows and chunks go to the pool.
#pragma once

#include <cmath>
#include <cstring>

#include "flash_common.h"  // kLog2e
#include "gemm_impl.h"

namespace attnkit {
namespace ATTNKIT_NS {

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)

// Runs f(begin, end) over [0, n) in pieces of at least `grain` elements on the pool.
template <class F>
void forRanges(int64_t n, int64_t grain, F f) {
  if (n <= 0) return;
  const int64_t tasks = imin(ceilDiv(n, grain), static_cast<int64_t>(poolThreads()) * 4);
  const int64_t step = ceilDiv(n, tasks);
  auto run = [&](int64_t t, int) {
    const int64_t b = t * step;
    if (b < n) f(b, imin(n, b + step));
  };
  parallel(tasks, run);
}

// out[i] = f(in0[i], in1[i], in2[i]) as vectors; the tail goes through a zero-padded block.
template <class F>
inline void vmap(int64_t n, const float* a, const float* b, const float* c, float* out, F f) {
  const V zero = V::zero();
  int64_t i = 0;
  for (; i + V::L <= n; i += V::L) {
    f(V::load(a + i), b ? V::load(b + i) : zero, c ? V::load(c + i) : zero).store(out + i);
  }
  if (i == n) return;
  alignas(64) float ta[V::L] = {}, tb[V::L] = {}, tc[V::L] = {}, to[V::L];
  const int64_t rest = n - i;
  for (int64_t j = 0; j < rest; j++) {
    ta[j] = a[i + j];
    if (b) tb[j] = b[i + j];
    if (c) tc[j] = c[i + j];
  }
  f(V::load(ta), V::load(tb), V::load(tc)).store(to);
  for (int64_t j = 0; j < rest; j++) out[i + j] = to[j];
}

// ---- nn.map: strided elementwise over up to kNnMaxRank dims ------------------------------

struct MapShape {
  int64_t rank, rows, len;  // rows: product of the outer dims; len: the last dim
  const int64_t* dims;
  const int64_t *ys, *as, *bs;
};

// Offsets of outer row r (the last dim excluded).
inline void rowOffsets(const MapShape& s, int64_t r, int64_t* y, int64_t* a, int64_t* b) {
  int64_t oy = 0, oa = 0, ob = 0;
  for (int64_t d = s.rank - 2; d >= 0; d--) {
    const int64_t i = r % s.dims[d];
    r /= s.dims[d];
    oy += i * s.ys[d];
    oa += i * s.as[d];
    ob += i * s.bs[d];
  }
  *y = oy;
  *a = oa;
  *b = ob;
}

template <class F>
inline void binaryRow(int64_t len, float* y, int64_t sy, const float* a, int64_t sa,
                      const float* b, int64_t sb, F f) {
  if (sy == 1 && sa == 1 && sb == 1) {
    for (int64_t j = 0; j < len; j++) y[j] = f(a[j], b[j]);
  } else if (sy == 1 && sa == 1 && sb == 0) {
    const float bv = b[0];
    for (int64_t j = 0; j < len; j++) y[j] = f(a[j], bv);
  } else if (sy == 1 && sa == 0 && sb == 1) {
    const float av = a[0];
    for (int64_t j = 0; j < len; j++) y[j] = f(av, b[j]);
  } else {
    for (int64_t j = 0; j < len; j++) y[j * sy] = f(a[j * sa], b[j * sb]);
  }
}

inline int64_t spanOf(int64_t rank, const int64_t* dims, const int64_t* strides) {
  int64_t s = 1;
  for (int64_t d = 0; d < rank; d++) {
    if (dims[d] == 0) return 0;
    s += (dims[d] - 1) * strides[d];
  }
  return s;
}

inline const char* nnMap(const NnCall& c) {
  const int64_t op = c.n[0];
  MapShape s{c.n[1], 1, 1, c.n + 2, c.n + 11, c.n + 20, c.n + 28};
  for (int64_t d = 0; d + 1 < s.rank; d++) s.rows *= s.dims[d];
  s.len = s.rank > 0 ? s.dims[s.rank - 1] : 1;
  const int64_t lys = s.rank > 0 ? s.ys[s.rank - 1] : 0;
  const int64_t las = s.rank > 0 ? s.as[s.rank - 1] : 0;
  const int64_t lbs = s.rank > 0 ? s.bs[s.rank - 1] : 0;
  float* y = c.out[0] + c.n[10];
  const float* a = c.in[0] + c.n[19];
  const float* b = c.in[1];
  const float* cc = c.in[2];
  if (s.rows * s.len == 0) {
    if (op == kMapSum || op == kMapMax) {
      const int64_t n = spanOf(s.rank, s.dims, s.ys);
      for (int64_t i = 0; i < n; i++) y[i] = op == kMapSum ? 0.0f : -kInf;
    }
    return nullptr;
  }
  if (op <= kMapCopy) {
    const int64_t grain = imax(1, 16384 / imax(1, s.len));
    forRanges(s.rows, grain, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        int64_t oy, oa, ob;
        rowOffsets(s, r, &oy, &oa, &ob);
        float* yr = y + oy;
        const float* ar = a + oa;
        const float* br = b != nullptr ? b + ob : ar;
        switch (op) {
          case kMapAdd: binaryRow(s.len, yr, lys, ar, las, br, lbs, [](float u, float v) { return u + v; }); break;
          case kMapSub: binaryRow(s.len, yr, lys, ar, las, br, lbs, [](float u, float v) { return u - v; }); break;
          case kMapMul: binaryRow(s.len, yr, lys, ar, las, br, lbs, [](float u, float v) { return u * v; }); break;
          case kMapDiv: binaryRow(s.len, yr, lys, ar, las, br, lbs, [](float u, float v) { return u / v; }); break;
          default: binaryRow(s.len, yr, lys, ar, las, ar, las, [](float u, float) { return u; }); break;
        }
      }
    });
    return nullptr;
  }
  // The reductions write one y element from many rows: one thread, in the ts kernel's order.
  if (op == kMapSum || op == kMapMax) {
    const int64_t n = spanOf(s.rank, s.dims, s.ys);
    for (int64_t i = 0; i < n; i++) y[i] = op == kMapSum ? 0.0f : -kInf;
    for (int64_t r = 0; r < s.rows; r++) {
      int64_t oy, oa, ob;
      rowOffsets(s, r, &oy, &oa, &ob);
      float* yr = y + oy;
      const float* ar = a + oa;
      if (op == kMapSum) {
        if (lys == 0) {
          double acc = 0;
          for (int64_t j = 0; j < s.len; j++) acc += ar[j * las];
          yr[0] += static_cast<float>(acc);
        } else if (lys == 1 && las == 1) {
          for (int64_t j = 0; j < s.len; j++) yr[j] += ar[j];
        } else {
          for (int64_t j = 0; j < s.len; j++) yr[j * lys] += ar[j * las];
        }
      } else {
        for (int64_t j = 0; j < s.len; j++) {
          const float x = ar[j * las];
          float& m = yr[j * lys];
          if (x > m || std::isnan(x)) m = x;
        }
      }
    }
    return nullptr;
  }
  // kMapMaxBackward: a = x (the iteration's shape), b = max(x) and cc = dy (strides bs), y = dx.
  Floats taken(spanOf(s.rank, s.dims, s.bs));
  if (!taken.ok()) return kOutOfMemory;
  float* t = taken.get();
  std::memset(t, 0, spanOf(s.rank, s.dims, s.bs) * 4);
  for (int64_t r = 0; r < s.rows; r++) {
    int64_t oy, oa, ob;
    rowOffsets(s, r, &oy, &oa, &ob);
    for (int64_t j = 0; j < s.len; j++) {
      const int64_t o = ob + j * lbs;
      const float x = a[oa + j * las];
      float g = 0.0f;
      if (t[o] == 0.0f && x == b[o]) {
        g = cc[o];
        t[o] = 1.0f;
      }
      y[oy + j * lys] = g;
    }
  }
  return nullptr;
}

// ---- nn.unary ----------------------------------------------------------------------------

inline V geluInner(V x) {
  return V::set1(kGeluC) * V::fma(V::set1(0.044715f) * x * x, x, x);
}

inline const char* nnUnary(const NnCall& c) {
  const int64_t op = c.n[0], n = c.n[1];
  const bool backward = c.n[2] != 0;
  const float* x = c.in[0];
  const float* yIn = c.in[1];
  const float* dy = c.in[2];
  float* out = c.out[0];
  const V one = V::set1(1.0f), half = V::set1(0.5f), log2e = V::set1(kLog2e);
  forRanges(n, 8192, [&](int64_t b, int64_t e) {
    const int64_t len = e - b;
    const float* xb = x + b;
    const float* yb = yIn != nullptr ? yIn + b : nullptr;
    const float* db = dy != nullptr ? dy + b : nullptr;
    float* ob = out + b;
    if (!backward) {
      switch (op) {
        case kUnExp:
          // exp2v saturates at 2^127: above ln(FLT_MAX) the ts kernel's f32 result is +inf.
          vmap(len, xb, nullptr, nullptr, ob, [&](V v, V, V) {
            return V::keep_in(exp2v(v * log2e), v, -kInf, 88.72283f, V::set1(kInf));
          });
          break;
        case kUnLog:
          for (int64_t i = 0; i < len; i++) ob[i] = std::log(xb[i]);
          break;
        case kUnRelu:
          for (int64_t i = 0; i < len; i++) ob[i] = xb[i] < 0.0f ? 0.0f : xb[i];
          break;
        case kUnGelu:
          vmap(len, xb, nullptr, nullptr, ob,
               [&](V v, V, V) { return half * v * (one + tanhv(geluInner(v))); });
          break;
        case kUnSilu:
          vmap(len, xb, nullptr, nullptr, ob,
               [&](V v, V, V) { return v * sigmoid2v(v * log2e, nullptr); });
          break;
        case kUnSigmoid:
          vmap(len, xb, nullptr, nullptr, ob, [&](V v, V, V) { return sigmoid2v(v * log2e, nullptr); });
          break;
        case kUnTanh:
          vmap(len, xb, nullptr, nullptr, ob, [&](V v, V, V) { return tanhv(v); });
          break;
        default: {
          const float ka = static_cast<float>(c.x[0]), kb = static_cast<float>(c.x[1]);
          for (int64_t i = 0; i < len; i++) ob[i] = ka * xb[i] + kb;
        }
      }
      return;
    }
    switch (op) {
      case kUnExp:
        for (int64_t i = 0; i < len; i++) ob[i] = db[i] * yb[i];
        break;
      case kUnLog:
        for (int64_t i = 0; i < len; i++) ob[i] = db[i] / xb[i];
        break;
      case kUnRelu:
        for (int64_t i = 0; i < len; i++) ob[i] = xb[i] > 0.0f ? db[i] : 0.0f;
        break;
      case kUnGelu:
        vmap(len, xb, db, nullptr, ob, [&](V v, V g, V) {
          V dt;
          const V t = tanhv(geluInner(v), &dt);
          const V inner = V::set1(kGeluC) * V::fma(V::set1(3 * 0.044715f) * v, v, one);
          return g * (half * (one + t) + half * v * dt * inner);
        });
        break;
      case kUnSilu:
        vmap(len, xb, db, nullptr, ob, [&](V v, V g, V) {
          const V s = sigmoid2v(v * log2e, nullptr);
          return g * s * V::fma(v, one - s, one);
        });
        break;
      case kUnSigmoid:
        for (int64_t i = 0; i < len; i++) ob[i] = db[i] * (yb[i] * (1.0f - yb[i]));
        break;
      default:  // tanh
        for (int64_t i = 0; i < len; i++) ob[i] = db[i] * (1.0f - yb[i] * yb[i]);
    }
  });
  return nullptr;
}

// ---- Row ops: softmax, norms, cross-entropy ------------------------------------------------

inline float rowMax(const float* x, int64_t n) {
  float m = -kInf;
  for (int64_t j = 0; j < n; j++) m = x[j] > m ? x[j] : m;
  return m;
}

// sum_j e^(x_j - m) (the vector path), written to y when y is not null.
inline double sumExp(const float* x, int64_t n, float m, float* y) {
  const V vm = V::set1(m), log2e = V::set1(kLog2e);
  V acc = V::zero();
  int64_t j = 0;
  for (; j + V::L <= n; j += V::L) {
    const V e = exp2v((V::load(x + j) - vm) * log2e);
    if (y != nullptr) e.store(y + j);
    acc = acc + e;
  }
  double s = V::hsum(acc);
  for (; j < n; j++) {
    const float e = std::exp(x[j] - m);
    if (y != nullptr) y[j] = e;
    s += e;
  }
  return s;
}

template <class F>
void forRows(int64_t rows, int64_t cols, F f) {
  forRanges(rows, imax(1, 8192 / imax(1, cols)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) f(r);
  });
}

inline const char* nnSoftmax(const NnCall& c) {
  const int64_t rows = c.n[0], cols = c.n[1];
  const bool log = c.n[2] != 0, backward = c.n[3] != 0;
  const float* x = c.in[0];
  const float* dy = c.in[1];
  float* out = c.out[0];
  forRows(rows, cols, [&](int64_t r) {
    const float* xr = x + r * cols;
    float* yr = out + r * cols;
    if (backward) {
      const float* dr = dy + r * cols;
      double s = 0;
      if (log) {
        for (int64_t j = 0; j < cols; j++) s += dr[j];
        for (int64_t j = 0; j < cols; j++) yr[j] = dr[j] - std::exp(xr[j]) * static_cast<float>(s);
      } else {
        for (int64_t j = 0; j < cols; j++) s += static_cast<double>(xr[j]) * dr[j];
        const float dot = static_cast<float>(s);
        for (int64_t j = 0; j < cols; j++) yr[j] = xr[j] * (dr[j] - dot);
      }
      return;
    }
    const float m = rowMax(xr, cols);
    if (m == -kInf) {
      // A fully masked row: softmax gives zeros (not NaN), logSoftmax x - (-inf).
      for (int64_t j = 0; j < cols; j++) yr[j] = log ? xr[j] - m : 0.0f;
      return;
    }
    if (log) {
      const float lse = m + static_cast<float>(std::log(sumExp(xr, cols, m, nullptr)));
      for (int64_t j = 0; j < cols; j++) yr[j] = xr[j] - lse;
    } else {
      const float inv = static_cast<float>(1.0 / sumExp(xr, cols, m, yr));
      for (int64_t j = 0; j < cols; j++) yr[j] *= inv;
    }
  });
  return nullptr;
}

// layerNorm (rms = 0) or rmsNorm (rms = 1): y, per-row mean (layerNorm) and rstd.
inline const char* nnNorm(const NnCall& c) {
  const int64_t rows = c.n[0], cols = c.n[1];
  const bool rms = c.n[2] != 0;
  const float eps = static_cast<float>(c.x[0]);
  const float* x = c.in[0];
  const float* w = c.in[1];
  const float* bias = c.in[2];
  forRows(rows, cols, [&](int64_t r) {
    const float* xr = x + r * cols;
    float* yr = c.out[0] + r * cols;
    double mu = 0;
    if (!rms) {
      for (int64_t j = 0; j < cols; j++) mu += xr[j];
      mu /= static_cast<double>(cols);
    }
    const float m = static_cast<float>(mu);
    double ss = 0;
    for (int64_t j = 0; j < cols; j++) {
      const double d = static_cast<double>(xr[j]) - mu;
      ss += d * d;
    }
    const float rs = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(cols) + eps));
    if (!rms) c.out[1][r] = m;
    c.out[2][r] = rs;
    for (int64_t j = 0; j < cols; j++) {
      float v = (xr[j] - m) * rs;
      if (w != nullptr) v *= w[j];
      if (bias != nullptr) v += bias[j];
      yr[j] = v;
    }
  });
  return nullptr;
}

// dx per row; dweight (and dbias for layerNorm) per column block over all rows.
inline const char* nnNormBackward(const NnCall& c) {
  const int64_t rows = c.n[0], cols = c.n[1];
  const bool rms = c.n[2] != 0;
  const float* x = c.in[0];
  const float* w = c.in[1];
  const float* mean = c.in[2];
  const float* rstd = c.in[3];
  const float* dy = c.in[4];
  float* dx = c.out[0];
  float* dw = c.out[1];
  float* db = c.out[2];
  forRows(rows, cols, [&](int64_t r) {
    const float* xr = x + r * cols;
    const float* gr = dy + r * cols;
    const float mu = rms ? 0.0f : mean[r];
    const float rs = rstd[r];
    // layerNorm: dx = rstd (g - mean(g) - xhat mean(g xhat)); rmsNorm drops mean(g); g = dy w.
    double mg = 0, mgx = 0;
    for (int64_t j = 0; j < cols; j++) {
      const float g = gr[j] * (w != nullptr ? w[j] : 1.0f);
      mg += g;
      mgx += static_cast<double>(g) * ((xr[j] - mu) * rs);
    }
    const float fmg = rms ? 0.0f : static_cast<float>(mg / static_cast<double>(cols));
    const float fmgx = static_cast<float>(mgx / static_cast<double>(cols));
    float* dr = dx + r * cols;
    for (int64_t j = 0; j < cols; j++) {
      const float g = gr[j] * (w != nullptr ? w[j] : 1.0f);
      dr[j] = rs * (g - fmg - (xr[j] - mu) * rs * fmgx);
    }
  });
  constexpr int64_t kBlock = 64;
  forRanges(ceilDiv(cols, kBlock), 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; blk++) {
      const int64_t j0 = blk * kBlock, j1 = imin(cols, j0 + kBlock);
      float aw[kBlock] = {}, ab[kBlock] = {};
      for (int64_t r = 0; r < rows; r++) {
        const float* xr = x + r * cols;
        const float* gr = dy + r * cols;
        const float mu = rms ? 0.0f : mean[r];
        const float rs = rstd[r];
        for (int64_t j = j0; j < j1; j++) {
          aw[j - j0] += gr[j] * ((xr[j] - mu) * rs);
          ab[j - j0] += gr[j];
        }
      }
      for (int64_t j = j0; j < j1; j++) {
        dw[j] = aw[j - j0];
        if (db != nullptr) db[j] = ab[j - j0];
      }
    }
  });
  return nullptr;
}

// lse per row whose target is not ignoreIndex (0 for the ignored ones); the addon has checked
// the targets.
inline const char* nnCrossEntropy(const NnCall& c) {
  const int64_t rows = c.n[0], cols = c.n[1], ignore = c.n[2];
  const float* logits = c.in[0];
  const int32_t* targets = c.idx[1];
  float* lse = c.out[0];
  forRows(rows, cols, [&](int64_t r) {
    if (targets[r] == ignore) {
      lse[r] = 0.0f;
      return;
    }
    const float* xr = logits + r * cols;
    const float m = rowMax(xr, cols);
    lse[r] = m == -kInf ? m : m + static_cast<float>(std::log(sumExp(xr, cols, m, nullptr)));
  });
  return nullptr;
}

inline const char* nnCrossEntropyBackward(const NnCall& c) {
  const int64_t rows = c.n[0], cols = c.n[1], ignore = c.n[2];
  const float scale = static_cast<float>(c.x[0]);
  const float* logits = c.in[0];
  const int32_t* targets = c.idx[1];
  const float* lse = c.in[2];
  forRows(rows, cols, [&](int64_t r) {
    float* dr = c.out[0] + r * cols;
    const int32_t y = targets[r];
    if (y == ignore) {
      for (int64_t j = 0; j < cols; j++) dr[j] = 0.0f;
      return;
    }
    const float* xr = logits + r * cols;
    const V vl = V::set1(lse[r]), vs = V::set1(scale), log2e = V::set1(kLog2e);
    vmap(cols, xr, nullptr, nullptr, dr,
         [&](V v, V, V) { return exp2v((v - vl) * log2e, 0.0f) * vs; });
    dr[y] -= scale;
  });
  return nullptr;
}

// ---- Embedding, rotary ---------------------------------------------------------------------

inline const char* nnGather(const NnCall& c) {
  const int64_t dim = c.n[1], count = c.n[2];
  const float* w = c.in[0];
  const int32_t* ids = c.idx[1];
  forRows(count, dim, [&](int64_t i) {
    std::memcpy(c.out[0] + i * dim, w + static_cast<int64_t>(ids[i]) * dim, dim * 4);
  });
  return nullptr;
}

// Column blocks in parallel, the ids in order within each: no two threads add to one element.
inline const char* nnScatterAdd(const NnCall& c) {
  const int64_t rows = c.n[0], dim = c.n[1], count = c.n[2];
  const int32_t* ids = c.idx[0];
  const float* dy = c.in[1];
  float* out = c.out[0];
  constexpr int64_t kBlock = 256;
  forRanges(ceilDiv(dim, kBlock), 1, [&](int64_t b0, int64_t b1) {
    const int64_t j0 = b0 * kBlock, j1 = imin(dim, b1 * kBlock);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t j = j0; j < j1; j++) out[r * dim + j] = 0.0f;
    for (int64_t i = 0; i < count; i++) {
      float* o = out + static_cast<int64_t>(ids[i]) * dim;
      const float* g = dy + i * dim;
      for (int64_t j = j0; j < j1; j++) o[j] += g[j];
    }
  });
  return nullptr;
}

// Rotate-half per section; cos / sin: [tokens, halves] with the inverse's sign folded into sin.
inline const char* nnRope(const NnCall& c) {
  const int64_t rows = c.n[0], d = c.n[1], tokens = c.n[2], halves = c.n[3], sections = c.n[4];
  const float* x = c.in[0];
  const float* cosT = c.in[1];
  const float* sinT = c.in[2];
  forRows(rows, d, [&](int64_t r) {
    const float* xr = x + r * d;
    float* yr = c.out[0] + r * d;
    const float* cr = cosT + (r % tokens) * halves;
    const float* sr = sinT + (r % tokens) * halves;
    int64_t c0 = 0, h0 = 0;
    for (int64_t s = 0; s < sections; s++) {
      const int64_t half = c.n[5 + s] / 2;
      for (int64_t i = 0; i < half; i++) {
        const float a = xr[c0 + i], b = xr[c0 + half + i];
        const float co = cr[h0 + i], si = sr[h0 + i];
        yr[c0 + i] = a * co - b * si;
        yr[c0 + half + i] = b * co + a * si;
      }
      c0 += 2 * half;
      h0 += half;
    }
    for (int64_t j = c0; j < d; j++) yr[j] = xr[j];
  });
  return nullptr;
}

// ---- Batched matmul on gemm ------------------------------------------------------------------

// c[t] = op(a[ia[t]]) op(b[ib[t]]); one gemm of batch * m rows when b is shared and the a
// matrices are the batch in order (a Linear layer on [..., K] rows).
inline const char* nnMatmul(const NnCall& c) {
  const int64_t batch = c.n[0], m = c.n[1], n = c.n[2], k = c.n[3];
  const bool transA = c.n[4] != 0, transB = c.n[5] != 0;
  const int32_t* ia = c.idx[2];
  const int32_t* ib = c.idx[3];
  GemmArgs g{transA, transB, m, n, k, 1.0f, 0.0f, nullptr, transA ? m : k,
             nullptr, transB ? k : n, nullptr, n};
  bool fold = !transA && batch > 1;
  for (int64_t t = 0; fold && t < batch; t++) fold = ia[t] == t && ib[t] == ib[0];
  if (fold) {
    g.m = batch * m;
    g.a = c.in[0];
    g.b = c.in[1] + static_cast<int64_t>(ib[0]) * k * n;
    g.c = c.out[0];
    return gemm(g);
  }
  for (int64_t t = 0; t < batch; t++) {
    g.a = c.in[0] + static_cast<int64_t>(ia[t]) * m * k;
    g.b = c.in[1] + static_cast<int64_t>(ib[t]) * k * n;
    g.c = c.out[0] + t * m * n;
    const char* err = gemm(g);
    if (err != nullptr) return err;
  }
  return nullptr;
}

// ---- Optimizers ------------------------------------------------------------------------------

// In double, the moments rounded to f32 before use, as the ts kernel (Float32Array storage).
inline const char* nnAdamw(const NnCall& c) {
  const double lr = c.x[0], b1 = c.x[1], b2 = c.x[2], eps = c.x[3], wd = c.x[4], bc1 = c.x[5],
               bc2 = c.x[6];
  const float* p = c.in[0];
  const float* g = c.in[1];
  const float* m0 = c.in[2];
  const float* v0 = c.in[3];
  forRanges(c.n[0], 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      const double gi = g[i];
      const float m = static_cast<float>(b1 * m0[i] + (1 - b1) * gi);
      const float v = static_cast<float>(b2 * v0[i] + (1 - b2) * gi * gi);
      c.out[1][i] = m;
      c.out[2][i] = v;
      c.out[0][i] =
          static_cast<float>(p[i] * (1 - lr * wd) - (lr * (m / bc1)) / (std::sqrt(v / bc2) + eps));
    }
  });
  return nullptr;
}

inline const char* nnSgd(const NnCall& c) {
  const double lr = c.x[0], momentum = c.x[1], dampening = c.x[2], wd = c.x[3];
  const bool nesterov = c.x[4] != 0;
  const float* p = c.in[0];
  const float* g = c.in[1];
  const float* old = c.in[2];
  float* buf = c.out[1];
  forRanges(c.n[0], 16384, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      double d = g[i] + wd * p[i];
      if (buf != nullptr) {
        const float bi = static_cast<float>(old != nullptr ? momentum * old[i] + (1 - dampening) * d : d);
        buf[i] = bi;
        d = nesterov ? d + momentum * bi : bi;
      }
      c.out[0][i] = static_cast<float>(p[i] - lr * d);
    }
  });
  return nullptr;
}

// Partial sums of squares (double within a chunk) of `chunks` equal pieces; the host adds them.
inline const char* nnSumSquares(const NnCall& c) {
  const int64_t n = c.n[0], chunks = c.n[1];
  const int64_t step = ceilDiv(n, chunks);
  const float* x = c.in[0];
  auto run = [&](int64_t t, int) {
    double s = 0;
    for (int64_t i = t * step; i < imin(n, (t + 1) * step); i++) s += static_cast<double>(x[i]) * x[i];
    c.out[0][t] = static_cast<float>(s);
  };
  parallel(chunks, run);
  return nullptr;
}

// f32 of one f16 bit pattern: a normal number by rebiasing its exponent (127 - 15) and
// shifting its mantissa, zero / subnormal / infinity / NaN by their own rules. Exact. The
// AVX-512 build converts 16 at a time with vcvtph2ps; AVX2 and scalar use this (the AVX2 unit
// is not built with F16C).
inline float halfBitsToFloat(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  uint32_t bits;
  if (e == 0x1fu) {
    // Infinity, or NaN with its payload, quieted as vcvtph2ps quiets it (the same bits whichever
    // loop converts an element).
    bits = sign | 0x7f800000u | (m << 13) | (m != 0 ? 0x400000u : 0u);
  } else if (e != 0) {
    bits = sign | ((e + 112u) << 23) | (m << 13);
  } else {
    float f = static_cast<float>(m) * 5.9604644775390625e-8f;  // m 2^-24: exact
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// nn.decodeHalf: count halves (f16, or bf16 with bf16 = 1) to f32. The halves arrive as the
// bytes of c.in[0] (a Float32Array over the same memory: two halves a float).
inline const char* nnDecodeHalf(const NnCall& c) {
  const int64_t n = c.n[0];
  const bool bf16 = c.n[1] != 0;
  const unsigned char* src = reinterpret_cast<const unsigned char*>(c.in[0]);
  float* y = c.out[0];
  forRanges(n, 1 << 16, [&](int64_t b, int64_t e) {
    int64_t i = b;
#if defined(__AVX512F__)
    if (!bf16)
      for (; i + 16 <= e; i += 16) {
        const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i));
        _mm512_storeu_ps(y + i, _mm512_cvtph_ps(h));
      }
#endif
    for (; i < e; i++) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      if (bf16) {
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(y + i, &bits, 4);
      } else {
        y[i] = halfBitsToFloat(h);
      }
    }
  });
  return nullptr;
}

#define ATTNKIT_NN_OP(name, fn) \
  inline const char* name(const void* call) { return fn(*static_cast<const NnCall*>(call)); }
ATTNKIT_NN_OP(runNnMap, nnMap)
ATTNKIT_NN_OP(runNnUnary, nnUnary)
ATTNKIT_NN_OP(runNnSoftmax, nnSoftmax)
ATTNKIT_NN_OP(runNnNorm, nnNorm)
ATTNKIT_NN_OP(runNnNormBackward, nnNormBackward)
ATTNKIT_NN_OP(runNnCrossEntropy, nnCrossEntropy)
ATTNKIT_NN_OP(runNnCrossEntropyBackward, nnCrossEntropyBackward)
ATTNKIT_NN_OP(runNnGather, nnGather)
ATTNKIT_NN_OP(runNnScatterAdd, nnScatterAdd)
ATTNKIT_NN_OP(runNnRope, nnRope)
ATTNKIT_NN_OP(runNnMatmul, nnMatmul)
ATTNKIT_NN_OP(runNnAdamw, nnAdamw)
ATTNKIT_NN_OP(runNnSgd, nnSgd)
ATTNKIT_NN_OP(runNnSumSquares, nnSumSquares)
ATTNKIT_NN_OP(runNnDecodeHalf, nnDecodeHalf)
#undef ATTNKIT_NN_OP

}  // namespace ATTNKIT_NS
}  // namespace attnkit
