// SageAttention2's scale groups and rounding (packages/sage-attention/ARITHMETIC.md, the
// contract; packages/skeleton/src/sage/codec.ts qGroupOf / kGroupOf / rint are the TS twins),
// shared by the pre-pass (sage_quantize.h) and the kernel (sage_forward.h) of one ISA.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common_impl.h"

namespace attnkit {
namespace ATTNKIT_NS {

// The key tile of the kernel: fixed by the contract (P's quantization depends on the running
// max at each tile's end, so every backend cuts the keys at multiples of 64).
constexpr int64_t kSageTile = 64;
// Query rows per smoothQ block (and per 'block' scale group).
constexpr int64_t kSageQBlock = 128;

// Q scale group of row i: 'block' its 128-row block, 'warp' its 16-row tile, 'thread' rows i
// and i + 8 of a 16-row tile.
inline int64_t sageQGroup(int64_t i, SageGranularity g) {
  if (g == SageGranularity::kBlock) return i >> 7;
  if (g == SageGranularity::kWarp) return i >> 4;
  return (i >> 4) * 8 + (i & 7);
}

// K scale group of key j: 'block' and 'warp' its 64-key tile, 'thread' the 16 keys of a tile
// with equal (j & 7) >> 1.
inline int64_t sageKGroup(int64_t j, SageGranularity g) {
  return g == SageGranularity::kThread ? (j >> 6) * 4 + ((j & 7) >> 1) : j >> 6;
}

// s = f32(amax / qmax), the quotient in binary64 (as the TS spec's Math.fround(amax / qmax));
// 0 when amax = 0.
inline float sageScale(float amax, int qmax) {
  return amax == 0.0f ? 0.0f : static_cast<float>(static_cast<double>(amax) / qmax);
}

// clamp(rint(x / s), -qmax, qmax) with the quotient in binary64 and rint half to even
// (nearbyint in the default rounding mode); 0 when s = 0.
inline int8_t sageCode(float x, float s, int qmax) {
  if (s == 0.0f) return 0;
  double r = std::nearbyint(static_cast<double>(x) / static_cast<double>(s));
  if (r > qmax) r = qmax;
  if (r < -qmax) r = -qmax;
  return static_cast<int8_t>(r);
}

// Whether n floats are all finite (x - x is 0 for finite x, NaN otherwise), summed in the lanes
// (a float sum the compiler would keep scalar: its order is fixed).
inline bool sageAllFinite(const float* x, int64_t n) {
  V acc = V::zero();
  int64_t i = 0;
  for (; i + V::L <= n; i += V::L) {
    const V y = V::load(x + i);
    acc = acc + (y - y);
  }
  float lanes[V::L];
  acc.store(lanes);
  float a = 0.0f;
  for (int l = 0; l < V::L; l++) a += lanes[l];
  for (; i < n; i++) a += x[i] - x[i];
  return a == 0.0f;
}

// A grow-only buffer reused across calls: a fresh multi-MiB allocation per call is mapped anew
// and pays its page faults every time (10% of a (1, 8, 2048, 64) forward here). One call at a
// time holds the cached buffer (an atomic flag, no library lock whose inline code another ISA's
// translation unit could share); a concurrent call allocates its own. Per ISA namespace.
struct SageCache {
  float* p;
  int64_t n;
  int busy;
};
inline SageCache& sageCache() {
  static SageCache c{nullptr, 0, 0};
  return c;
}

class SageBuffer {
 public:
  explicit SageBuffer(int64_t n) {
    SageCache& c = sageCache();
    if (__atomic_exchange_n(&c.busy, 1, __ATOMIC_ACQUIRE) == 0) {
      cached_ = true;
      if (c.n < n) {
        freeFloats(c.p);
        c.p = allocFloats(n);
        c.n = c.p != nullptr ? n : 0;
      }
      p_ = c.p;
    } else {
      p_ = allocFloats(n);
    }
  }
  SageBuffer(const SageBuffer&) = delete;
  SageBuffer& operator=(const SageBuffer&) = delete;
  ~SageBuffer() {
    if (cached_)
      __atomic_store_n(&sageCache().busy, 0, __ATOMIC_RELEASE);
    else
      freeFloats(p_);
  }
  float* get() const { return p_; }
  bool ok() const { return p_ != nullptr; }

 private:
  float* p_ = nullptr;
  bool cached_ = false;
};

// Runs f(task, thread) for task in [0, n) on at most `threads` pool threads (0 or more than
// the pool: all of them): that many pool tasks each take work items from a shared counter.
template <class F>
void parallelCapped(int64_t n, int64_t threads, F& f) {
  if (threads <= 0 || threads >= poolThreads() || n <= 1) {
    parallel(n, f);
    return;
  }
  int64_t next = 0;
  auto worker = [&](int64_t, int thread) {
    for (;;) {
      const int64_t t = __atomic_fetch_add(&next, 1, __ATOMIC_RELAXED);
      if (t >= n) break;
      f(t, thread);
    }
  };
  parallel(threads, worker);
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
