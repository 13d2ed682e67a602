// One SIMD vector type per instruction set. Each kernels_<isa>.cc defines ATTNKIT_NS (and
// ATTNKIT_ISA_AVX512 or ATTNKIT_ISA_AVX2) before including this header, so every inline
// function below lives in an ISA-specific namespace: the linker can never merge an AVX-512
// copy of a helper into code that must run on a CPU without AVX-512.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(ATTNKIT_ISA_AVX512) || defined(ATTNKIT_ISA_AVX2)
#include <immintrin.h>
#endif

// The kernel templates are instantiated once per hook policy, so the compiler no longer sees
// each micro-kernel called from a single place and would keep it out of line; these pin the
// inlining of the plain FA2 kernels (the micro-kernels inside the tile functions, the tile
// functions themselves out of line).
#define ATTNKIT_ALWAYS_INLINE inline __attribute__((always_inline))
#define ATTNKIT_NOINLINE __attribute__((noinline))
// A hot out-of-line function's start on a 64-byte boundary, so that its loops sit at the same
// offsets within the front end's 64-byte fetch / op-cache windows whatever the functions around it
// (the decode tile: with a 16-byte start, an unrelated change next to it made softmax decode
// 5-15% slower on the AMD EPYC VM, and 64-byte alignment gave the old speed back).
#define ATTNKIT_ALIGN64 __attribute__((aligned(64)))

namespace attnkit {
namespace ATTNKIT_NS {

constexpr float kInf = __builtin_huge_valf();

// Cephes exp2f: 2^f = 1 + f * P(f) on [-0.5, 0.5], relative error below 2^-23 (about 1 ulp),
// which keeps the softmax inside KERNELS.md's 1e-5 f32 tolerance.
constexpr float kExp2P0 = 1.535336188319500e-4f;
constexpr float kExp2P1 = 1.339887440266574e-3f;
constexpr float kExp2P2 = 9.618437357674640e-3f;
constexpr float kExp2P3 = 5.550332471162809e-2f;
constexpr float kExp2P4 = 2.402264791363012e-1f;
constexpr float kExp2P5 = 6.931472028550421e-1f;
// Below 2^-125 a probability is dropped: relative to the row maximum (1) it is far under f32
// resolution, and the clamp keeps the exponent trick away from denormals.
constexpr float kExp2Min = -125.0f;

#if defined(ATTNKIT_ISA_AVX512)

struct V {
  static constexpr int L = 16;
  __m512 v;
  static V load(const float* p) { return {_mm512_loadu_ps(p)}; }
  static V set1(float x) { return {_mm512_set1_ps(x)}; }
  static V zero() { return {_mm512_setzero_ps()}; }
  void store(float* p) const { _mm512_storeu_ps(p, v); }
  friend V operator+(V a, V b) { return {_mm512_add_ps(a.v, b.v)}; }
  friend V operator-(V a, V b) { return {_mm512_sub_ps(a.v, b.v)}; }
  friend V operator*(V a, V b) { return {_mm512_mul_ps(a.v, b.v)}; }
  friend V operator/(V a, V b) { return {_mm512_div_ps(a.v, b.v)}; }
  static V abs(V a) { return {_mm512_abs_ps(a.v)}; }
  // a * b + c
  static V fma(V a, V b, V c) { return {_mm512_fmadd_ps(a.v, b.v, c.v)}; }
  // x, hidden from the optimiser: a product passed through it is rounded on its own, never
  // contracted into an fma with what follows (see bwdProb).
  static V opaque(V x) {
    __asm__("" : "+v"(x.v));
    return x;
  }
  static V max(V a, V b) { return {_mm512_max_ps(a.v, b.v)}; }
  static V min(V a, V b) { return {_mm512_min_ps(a.v, b.v)}; }
  // Lanes with lo <= t <= hi keep x, the others take fill.
  static V keep_in(V x, V t, float lo, float hi, V fill) {
    __mmask16 m = _mm512_cmp_ps_mask(t.v, _mm512_set1_ps(lo), _CMP_GE_OQ) &
                  _mm512_cmp_ps_mask(t.v, _mm512_set1_ps(hi), _CMP_LE_OQ);
    return {_mm512_mask_blend_ps(m, fill.v, x.v)};
  }
  static V keep_nonzero(V x, V flag, V fill) {
    __mmask16 m = _mm512_cmp_ps_mask(flag.v, _mm512_setzero_ps(), _CMP_NEQ_OQ);
    return {_mm512_mask_blend_ps(m, fill.v, x.v)};
  }
  static V round(V x) { return {_mm512_roundscale_ps(x.v, _MM_FROUND_TO_NEAREST_INT)}; }
  // p * 2^n for integral n in [-125, 127].
  static V scale2(V p, V n) { return {_mm512_scalef_ps(p.v, n.v)}; }
  // The sum of the lanes (the decode path's dot products, flash_decode.h).
  static float hsum(V a) { return _mm512_reduce_add_ps(a.v); }
};

#elif defined(ATTNKIT_ISA_AVX2)

struct V {
  static constexpr int L = 8;
  __m256 v;
  static V load(const float* p) { return {_mm256_loadu_ps(p)}; }
  static V set1(float x) { return {_mm256_set1_ps(x)}; }
  static V zero() { return {_mm256_setzero_ps()}; }
  void store(float* p) const { _mm256_storeu_ps(p, v); }
  friend V operator+(V a, V b) { return {_mm256_add_ps(a.v, b.v)}; }
  friend V operator-(V a, V b) { return {_mm256_sub_ps(a.v, b.v)}; }
  friend V operator*(V a, V b) { return {_mm256_mul_ps(a.v, b.v)}; }
  friend V operator/(V a, V b) { return {_mm256_div_ps(a.v, b.v)}; }
  static V abs(V a) { return {_mm256_andnot_ps(_mm256_set1_ps(-0.0f), a.v)}; }
  static V fma(V a, V b, V c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
  static V opaque(V x) {
    __asm__("" : "+v"(x.v));
    return x;
  }
  static V max(V a, V b) { return {_mm256_max_ps(a.v, b.v)}; }
  static V min(V a, V b) { return {_mm256_min_ps(a.v, b.v)}; }
  static V keep_in(V x, V t, float lo, float hi, V fill) {
    __m256 m = _mm256_and_ps(_mm256_cmp_ps(t.v, _mm256_set1_ps(lo), _CMP_GE_OQ),
                             _mm256_cmp_ps(t.v, _mm256_set1_ps(hi), _CMP_LE_OQ));
    return {_mm256_blendv_ps(fill.v, x.v, m)};
  }
  static V keep_nonzero(V x, V flag, V fill) {
    __m256 m = _mm256_cmp_ps(flag.v, _mm256_setzero_ps(), _CMP_NEQ_OQ);
    return {_mm256_blendv_ps(fill.v, x.v, m)};
  }
  static V round(V x) {
    return {_mm256_round_ps(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)};
  }
  static V scale2(V p, V n) {
    __m256i e = _mm256_slli_epi32(_mm256_cvtps_epi32(n.v), 23);
    return {_mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p.v), e))};
  }
  static float hsum(V a) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(a.v), _mm256_extractf128_ps(a.v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
  }
};

#else

// Portable path: one float per "vector"; the compiler may still vectorise the loops.
struct V {
  static constexpr int L = 1;
  float v;
  static V load(const float* p) { return {*p}; }
  static V set1(float x) { return {x}; }
  static V zero() { return {0.0f}; }
  void store(float* p) const { *p = v; }
  friend V operator+(V a, V b) { return {a.v + b.v}; }
  friend V operator-(V a, V b) { return {a.v - b.v}; }
  friend V operator*(V a, V b) { return {a.v * b.v}; }
  friend V operator/(V a, V b) { return {a.v / b.v}; }
  static V abs(V a) { return {a.v < 0.0f ? -a.v : a.v}; }
  static V fma(V a, V b, V c) { return {a.v * b.v + c.v}; }
  static V opaque(V x) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+x"(x.v));
#elif defined(__aarch64__)
    __asm__("" : "+w"(x.v));
#else
    volatile float y = x.v;
    x.v = y;
#endif
    return x;
  }
  static V max(V a, V b) { return {a.v > b.v ? a.v : b.v}; }
  static V min(V a, V b) { return {a.v < b.v ? a.v : b.v}; }
  static V keep_in(V x, V t, float lo, float hi, V fill) {
    return (t.v >= lo && t.v <= hi) ? x : fill;
  }
  static V keep_nonzero(V x, V flag, V fill) { return flag.v != 0.0f ? x : fill; }
  // Adding and subtracting 1.5 * 2^23 rounds to nearest for |x| < 2^22.
  static V round(V x) { return {(x.v + 12582912.0f) - 12582912.0f}; }
  static V scale2(V p, V n) {
    int32_t bits;
    std::memcpy(&bits, &p.v, 4);
    bits += static_cast<int32_t>(n.v) * (1 << 23);
    float r;
    std::memcpy(&r, &bits, 4);
    return {r};
  }
  static float hsum(V a) { return a.v; }
};

#endif

// 2^x to about 1 ulp; x = -inf (a masked score) and x < -125 give exactly 0.
// hi: the largest exponent taken (lower values clamp the result at 2^hi for free, e.g. 0 for a
// probability).
inline V exp2v(V x, float hi = 127.0f) {
  V xc = V::min(V::max(x, V::set1(kExp2Min)), V::set1(hi));
  V n = V::round(xc);
  V f = xc - n;
  V p = V::fma(V::set1(kExp2P0), f, V::set1(kExp2P1));
  p = V::fma(p, f, V::set1(kExp2P2));
  p = V::fma(p, f, V::set1(kExp2P3));
  p = V::fma(p, f, V::set1(kExp2P4));
  p = V::fma(p, f, V::set1(kExp2P5));
  p = V::fma(p, f, V::set1(1.0f));
  return V::keep_in(V::scale2(p, n), x, kExp2Min, kInf, V::zero());
}

// tanh(x) to a few ulp (Cephes tanhf): x + x^3 P(x^2) for |x| <= 0.625, else
// sign(x) (1 - e) / (1 + e) with e = e^(-2|x|) <= 1, which saturates to +-1 without overflow.
// With deriv, also 1 - tanh^2(x), as 4 e / (1 + e)^2 where 1 - t^2 would cancel.
inline V tanhv(V x, V* deriv = nullptr) {
  const V a = V::abs(x);
  const V s = x * x;
  V p = V::fma(V::set1(-5.70498872745e-3f), s, V::set1(2.06390887954e-2f));
  p = V::fma(p, s, V::set1(-5.37397155531e-2f));
  p = V::fma(p, s, V::set1(1.33314422036e-1f));
  p = V::fma(p, s, V::set1(-3.33332819422e-1f));
  const V small = V::fma(p * s, x, x);
  const V one = V::set1(1.0f);
  const V e = exp2v(a * V::set1(-2.0f * 1.4426950408889634f));
  const V inv = one / (one + e);
  const V big = (one - e) * inv;
  if (deriv != nullptr) {
    *deriv = V::keep_in(one - small * small, a, 0.0f, 0.625f, V::set1(4.0f) * e * inv * inv);
  }
  const V sbig = V::keep_in(big, x, 0.0f, kInf, V::zero() - big);
  return V::keep_in(small, a, 0.0f, 0.625f, sbig);
}

// w = sigmoid(t ln 2) (t in log2 units) and w (1 - w), from e = 2^-|t| <= 1 so nothing
// overflows: w = 1 / (1 + e) for t >= 0, e / (1 + e) below; t = -inf gives exactly 0 and 0.
inline V sigmoid2v(V t, V* deriv) {
  const V e = exp2v(V::zero() - V::abs(t));
  const V inv = V::set1(1.0f) / (V::set1(1.0f) + e);
  const V lowSide = e * inv;
  if (deriv != nullptr) *deriv = lowSide * inv;
  return V::keep_in(inv, t, 0.0f, kInf, lowSide);
}

inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }

}  // namespace ATTNKIT_NS
}  // namespace attnkit
