// SageAttention2's kernel (op sage.forward) on the codec of the pre-pass, exactly as
// packages/sage-attention/ARITHMETIC.md "Kernel": key tiles of 64 keys at multiples of 64, the
// score of a pair from the exact int32 dot of its Q and K codes, t = f32(dot) f32(sQ sK)
// (+ the smoothQ bias), s = t scale, online softmax in f32 (natural units), P~ quantized per tile
// as pCode = rint(255 p) in u8 and P~ V as an exact int32 sum of pCode vCode rescaled by dV
// (pvBits 8), or P V in f32 (pvBits 32).
//
// The layout is the FA2 forward's (flash_forward.h): a task is a block of kFwdBq query rows of
// one (b, h) in the SIMD lanes, keys broadcast, so the running max and sum are per-lane
// vectors; it reuses that file's tile classification (classifyTile: causal / window tile
// skipping), its mask (fwdMask) and, for pvBits 32, its P V micro-kernel. The integer products:
// - AVX-512 VNNI: vpdpbusd (u8 x s8, 4 per 32-bit lane) with Q offset by 128 (Q codes are
//   [-127, 127]) and the per-key correction 128 sum_c kCode; P V as pCode (u8) x vCode (s8),
//   exact as it is.
// - AVX2: Q K with vpmaddubsw on |q| (u8) x sign(q) k (s8) (vpsignb): a pair sums to at most
//   2 127^2 < 2^15, so the int16 never saturates (Q offset by 128 would reach 2 255 127), then
//   vpmaddwd by 1 into int32; P V with vpmaddwd on int16 (pCode up to 255 does not fit s8).
// - scalar: plain int32 loops.
// The per-call preparation (prepare): sK per key, the VNNI correction, and V's codes packed per
// tile as [dv][key groups] 32-bit words (4 / 2 / 1 keys per word), the broadcast operand of P V.
#pragma once

#include <cstring>

#include "flash_forward.h"
#include "sage_common.h"

namespace attnkit {
namespace ATTNKIT_NS {

#if defined(ATTNKIT_ISA_AVX512)
#if !defined(ATTNKIT_SAGE_VNNI)
#error "sage_forward.h on AVX-512 is the VNNI kernel (kernels_avx512vnni.cc)"
#endif
using Vi = __m512i;
constexpr int kSageKpg = 4;  // keys per 32-bit word of packed P and V codes
constexpr int kSageMR = 6;   // keys (Q K) or channels (P V) per register block
ATTNKIT_ALWAYS_INLINE Vi viZero() { return _mm512_setzero_si512(); }
ATTNKIT_ALWAYS_INLINE Vi viLoad(const int32_t* p) { return _mm512_loadu_si512(p); }
ATTNKIT_ALWAYS_INLINE void viStore(int32_t* p, Vi x) { _mm512_storeu_si512(p, x); }
ATTNKIT_ALWAYS_INLINE Vi viSet1(int32_t x) { return _mm512_set1_epi32(x); }
ATTNKIT_ALWAYS_INLINE Vi viSub(Vi a, Vi b) { return _mm512_sub_epi32(a, b); }
ATTNKIT_ALWAYS_INLINE Vi viOr(Vi a, Vi b) { return _mm512_or_si512(a, b); }
ATTNKIT_ALWAYS_INLINE Vi viShl(Vi a, int n) { return _mm512_slli_epi32(a, n); }
ATTNKIT_ALWAYS_INLINE V viToF(Vi x) { return {_mm512_cvtepi32_ps(x)}; }
// Round to nearest even (the default MXCSR mode).
ATTNKIT_ALWAYS_INLINE Vi fToVi(V x) { return _mm512_cvtps_epi32(x.v); }
// acc += the 4-byte dots u8(a) . s8(b) per 32-bit lane, in place. GCC 12's register allocator
// copies the accumulator of _mm512_dpbusd_epi32 through a scratch register and the stack (three
// extra instructions per product, measured 2x slower); the asm ties it to its register.
ATTNKIT_ALWAYS_INLINE Vi dpbusd(Vi acc, Vi a, Vi b) {
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}
#elif defined(ATTNKIT_ISA_AVX2)
using Vi = __m256i;
constexpr int kSageKpg = 2;
constexpr int kSageMR = 4;
ATTNKIT_ALWAYS_INLINE Vi viZero() { return _mm256_setzero_si256(); }
ATTNKIT_ALWAYS_INLINE Vi viLoad(const int32_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
ATTNKIT_ALWAYS_INLINE void viStore(int32_t* p, Vi x) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), x);
}
ATTNKIT_ALWAYS_INLINE Vi viSet1(int32_t x) { return _mm256_set1_epi32(x); }
ATTNKIT_ALWAYS_INLINE Vi viSub(Vi a, Vi b) { return _mm256_sub_epi32(a, b); }
ATTNKIT_ALWAYS_INLINE Vi viOr(Vi a, Vi b) { return _mm256_or_si256(a, b); }
ATTNKIT_ALWAYS_INLINE Vi viShl(Vi a, int n) { return _mm256_slli_epi32(a, n); }
ATTNKIT_ALWAYS_INLINE V viToF(Vi x) { return {_mm256_cvtepi32_ps(x)}; }
ATTNKIT_ALWAYS_INLINE Vi fToVi(V x) { return _mm256_cvtps_epi32(x.v); }
#else
using Vi = int32_t;
constexpr int kSageKpg = 1;
constexpr int kSageMR = 4;
inline Vi viZero() { return 0; }
inline Vi viLoad(const int32_t* p) { return *p; }
inline void viStore(int32_t* p, Vi x) { *p = x; }
inline Vi viSet1(int32_t x) { return x; }
inline Vi viSub(Vi a, Vi b) { return a - b; }
inline Vi viOr(Vi a, Vi b) { return a | b; }
inline Vi viShl(Vi a, int n) { return static_cast<Vi>(static_cast<uint32_t>(a) << n); }
inline V viToF(Vi x) { return {static_cast<float>(x)}; }
// Codes are in [0, 255]: V::round is exact there (half to even).
inline Vi fToVi(V x) { return static_cast<Vi>(V::round(x).v); }
#endif

// VNNI's Q offset needs the per-key correction 128 sum_c kCode.
#if defined(ATTNKIT_ISA_AVX512)
constexpr bool kSageCorrection = true;
#else
constexpr bool kSageCorrection = false;
#endif

// 32-bit words of packed P / V codes per key tile.
constexpr int64_t kSageGroups = kSageTile / kSageKpg;

inline int32_t sageLoad32(const int8_t* p) {
  int32_t x;
  std::memcpy(&x, p, 4);
  return x;
}

// e^x for x <= 0 to about 1 ulp (the rescale alpha, once per lane and tile): 2^n 2^r with
// n = round(x log2 e) and r = x log2 e - n from two fmas with log2 e in two parts (|r| <= 0.5
// to 2^-25), 2^r = 1 + r P(r) with P of degree 4 fitted for minimax relative error (9.1e-8).
// x below -86 (m = -inf) gives 2^-124 P: it multiplies a zero accumulator; a row that never saw
// a key keeps m = -inf, which is what marks it empty (sageBlock's finish), not l.
ATTNKIT_ALWAYS_INLINE V sageExp(V x) {
  const V xc = V::max(x, V::set1(-86.0f));
  const V n = V::round(xc * V::set1(1.44269502f));
  V r = V::fma(xc, V::set1(1.44269502f), V::zero() - n);
  r = V::fma(xc, V::set1(1.92596299e-8f), r);
  V p = V::fma(V::set1(1.326472731307149e-3f), r, V::set1(9.671512991189957e-3f));
  p = V::fma(p, r, V::set1(5.550733581185341e-2f));
  p = V::fma(p, r, V::set1(2.4022242426872253e-1f));
  p = V::fma(p, r, V::set1(6.931470036506653e-1f));
  p = V::fma(p, r, V::set1(1.0f));
  return V::scale2(p, n);
}

// 2^y for y <= 8 (the probabilities): 2^n 2^f, n = round(y), 2^f = 1 + f P(f) as sageExp's;
// y below -125 (masked keys) gives 2^-125 P, a normal number that rounds every code to 0 and
// adds nothing visible to a sum.
template <bool kClamp = true>
ATTNKIT_ALWAYS_INLINE V sageExp2(V y) {
  // AVX-512's scalef takes any exponent; elsewhere scale2 adds it to the float's bits. Without a
  // -inf input (kClamp false: no masked key in the tile) AVX-512 skips the clamp.
#if defined(ATTNKIT_ISA_AVX512)
  const V yc = kClamp ? V::max(y, V::set1(-125.0f)) : y;
  // 2^y = 2^n 2^(i / 32) 2^r with k = 32 n + i = rint(32 y) and |r| <= 1/64: adding 1.5 2^18
  // (an ulp of 1/32) rounds y to k / 32 and leaves i in the sum's low 5 bits, which index a
  // 32-entry table of 2^(i / 32) (vpermt2ps); 2^r = 1 + r (c1 + c2 r), so 2^(i/32) 2^r is
  // T + (T r)(c1 + c2 r): 3 multiplies where the degree-5 polynomial of the other ISAs takes 5.
  // The multiplies are what this kernel waits on (they share ports with vpdpbusd): the
  // forward at (1, 8, 2048, 64) ran 2-3% faster (benchmarks/sage/ab.mjs, one thread), and
  // without any exponential (a wrong kernel, a bound) 15% faster. In a simulation over 2M y in
  // [-20, 8] it is closer to the correctly rounded 2^y than the polynomial (mean 0.51 ulp, max
  // 1.72; the polynomial 0.66, 2.0). scalef floors k / 32 to n.
  const V magic = V::set1(393216.0f);
  const V t = yc + magic;
  const V kq = t - magic;
  const V r = yc - kq;  // exact
  const __m512 lo = _mm512_setr_ps(0x1.000000p+0f, 0x1.059b0ep+0f, 0x1.0b5586p+0f, 0x1.11301ep+0f, 0x1.172b84p+0f, 0x1.1d4874p+0f, 0x1.2387a6p+0f, 0x1.29e9e0p+0f, 0x1.306fe0p+0f, 0x1.371a74p+0f, 0x1.3dea64p+0f, 0x1.44e086p+0f, 0x1.4bfdaep+0f, 0x1.5342b6p+0f, 0x1.5ab07ep+0f, 0x1.6247ecp+0f);
  const __m512 hi = _mm512_setr_ps(0x1.6a09e6p+0f, 0x1.71f75ep+0f, 0x1.7a1148p+0f, 0x1.82589ap+0f, 0x1.8ace54p+0f, 0x1.93737cp+0f, 0x1.9c4918p+0f, 0x1.a5503cp+0f, 0x1.ae89fap+0f, 0x1.b7f770p+0f, 0x1.c199bep+0f, 0x1.cb720ep+0f, 0x1.d5818ep+0f, 0x1.dfc974p+0f, 0x1.ea4afap+0f, 0x1.f50766p+0f);
  const V tab{_mm512_permutex2var_ps(lo, _mm512_castps_si512(t.v), hi)};
  const V q = V::fma(V::set1(0.24022696912288666f), r, V::set1(0.6931573152542114f));
  return V::scale2(V::fma(tab * r, q, tab), kq);
#else
  const V yc = V::max(y, V::set1(-125.0f));
  const V n = V::round(yc);
  const V f = yc - n;
  V p = V::fma(V::set1(1.326472731307149e-3f), f, V::set1(9.671512991189957e-3f));
  p = V::fma(p, f, V::set1(5.550733581185341e-2f));
  p = V::fma(p, f, V::set1(2.4022242426872253e-1f));
  p = V::fma(p, f, V::set1(6.931470036506653e-1f));
  p = V::fma(p, f, V::set1(1.0f));
  return V::scale2(p, n);
#endif
}

// log2(255): 255 p = 2^((s - m) log2 e + log2 255), one fma from the exact scores' s - m. Its
// error is a few ulp of 255 p at most (s - m and the fma rounded once each, log2 e's f32
// rounding, the polynomial), within ARITHMETIC.md's "a few ulp" of the spec's Math.exp: a code
// differs from the spec's only where f32(255 p) lies within a few ulp of a .5 (including the
// spec's exact ties, e.g. 50.5, which any exp not equal to Math.exp's f32 rounding breaks either
// way). An exact exp then a multiply by 255 measured 15% slower here for the same code flips.
constexpr float kSageLog2_255 = 7.99435343685886f;

// Q K of one key tile: what a register block of keys needs.
struct SageQkArgs {
  int64_t dg, d;        // 4-channel groups (d / 4), key row length
  const int32_t* qp;    // packed Q^T [dg][Bq]: 4 codes per lane (VNNI: + 128 as u8)
  const float* sq;      // [Bq] sQ of each lane's row
  const int8_t* k;      // codes of the tile's first key
  const int32_t* corr;  // VNNI: 128 sum_c kCode per key (from the tile's first); else unused
  const float* sk;      // sK per key (from the tile's first)
  const float* sqsk;    // granularity block / warp: f32(sQ sK) per [vector][key], else null
  const float* bias;    // smoothQ: the term per key (from the tile's first), else null
  float scale;
  // The scale is a power of two in [2^-126, 1] (D 64, 256: 1/8, 1/16): sqsk, sq and bias come
  // multiplied by it and the scores skip their last product. Scaling by 2^e is exact and
  // commutes with rounding while nothing is subnormal or overflows, so f32(f32(t qk) + bias)
  // scale = f32(f32(t (qk scale)) + bias scale): the same bits, one multiply fewer per score.
  // Outside normal magnitudes (f32(sQ sK) scale or a score below 2^-126: inputs near 1e-19; a
  // t that overflows f32: inputs near 1e19) the two orders can differ in the last bits or in
  // where inf appears; a scale above 1 could overflow qk scale where the spec's t is finite,
  // so it is not folded.
  bool folded;
  float* st;            // [keys][Bq] scores
  V* mx;                // [kFwdNV] the running max of the tile's scores per lane
};

// Scores of keys r0 .. r0 + R - 1 of the tile: the exact int32 dots, then ARITHMETIC.md's
// t = f32(dot) f32(sQ sK), t = f32(t + bias), s = f32(t scale), each step rounded on its own
// (V::opaque keeps the compiler from contracting the product into an fma with the add): the
// spec's scores bit for bit. (Folding the scale and log2 e into one fma saved two operations a
// score, but its error grows with |s|, not |s - m|: p off by ~10 ulp flipped enough pCodes to
// put O 1.2e-4 from the spec, over ARITHMETIC.md's 1e-4.) VNNI's accumulators start at the
// key's correction -128 sum_c kCode.
// The register blocks' loops over r are unrolled by pragma: GCC left the epilogue's loop
// rolled, which made the accumulators an array in memory (24 spills and reloads per block).
template <bool kFolded>
struct SageScoresOf {
template <int R>
struct K {
  static ATTNKIT_ALWAYS_INLINE void run(const SageQkArgs& a, int64_t r0) {
    Vi acc[R][kFwdNV];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++)
      for (int v = 0; v < kFwdNV; v++) acc[r][v] = kSageCorrection ? viSet1(-a.corr[r0 + r]) : viZero();
    const int8_t* k = a.k + r0 * a.d;
#if defined(ATTNKIT_ISA_AVX2)
    const Vi ones = _mm256_set1_epi16(1);
#endif
    for (int64_t g = 0; g < a.dg; g++) {
      const int32_t* qg = a.qp + g * kFwdBq;
#if defined(ATTNKIT_ISA_AVX512) || defined(ATTNKIT_ISA_AVX2)
      Vi q[kFwdNV];
      for (int v = 0; v < kFwdNV; v++) q[v] = viLoad(qg + v * V::L);
#endif
#if defined(ATTNKIT_ISA_AVX512)
      #pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const Vi kb = _mm512_set1_epi32(sageLoad32(k + r * a.d + 4 * g));
        for (int v = 0; v < kFwdNV; v++) acc[r][v] = dpbusd(acc[r][v], q[v], kb);
      }
#elif defined(ATTNKIT_ISA_AVX2)
      Vi qa[kFwdNV];
      for (int v = 0; v < kFwdNV; v++) qa[v] = _mm256_abs_epi8(q[v]);
      for (int r = 0; r < R; r++) {
        const Vi kb = _mm256_set1_epi32(sageLoad32(k + r * a.d + 4 * g));
        for (int v = 0; v < kFwdNV; v++) {
          const Vi pairs = _mm256_maddubs_epi16(qa[v], _mm256_sign_epi8(kb, q[v]));
          acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(pairs, ones));
        }
      }
#else
      #pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const int8_t* kr = k + r * a.d + 4 * g;
        for (int v = 0; v < kFwdNV; v++) {
          const int8_t* qb = reinterpret_cast<const int8_t*>(qg + v);
          acc[r][v] += qb[0] * kr[0] + qb[1] * kr[1] + qb[2] * kr[2] + qb[3] * kr[3];
        }
      }
#endif
    }
    // The running max in registers: the stores to st (float) may alias a.mx (__m512 is
    // may_alias), so updating it in place would reload and store it after every score.
    V sq[kFwdNV], mx[kFwdNV];
    for (int v = 0; v < kFwdNV; v++) {
      sq[v] = V::load(a.sq + v * V::L);
      mx[v] = a.mx[v];
    }
    const V scale = V::set1(a.scale);
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      const int64_t j = r0 + r;
      const V sk = V::set1(a.sk[j]);
      const V bj = V::set1(a.bias != nullptr ? a.bias[j] : 0.0f);
      for (int v = 0; v < kFwdNV; v++) {
        // f32(sQ sK): from the tile's table when every lane of the vector shares sQ.
        const V qk = a.sqsk != nullptr ? V::set1(a.sqsk[v * kSageTile + j]) : sq[v] * sk;
        V t = V::opaque(viToF(acc[r][v]) * qk);
        if (a.bias != nullptr) t = t + bj;
        const V s = kFolded ? t : t * scale;
        s.store(a.st + j * kFwdBq + v * V::L);
        mx[v] = V::max(mx[v], s);
      }
    }
    for (int v = 0; v < kFwdNV; v++) a.mx[v] = mx[v];
  }
};
};

// All keys of a tile.
template <bool kFolded>
ATTNKIT_ALWAYS_INLINE void sageScores(const SageQkArgs& a, int64_t keys) {
  int64_t r = 0;
  for (; r + kSageMR <= keys; r += kSageMR) SageScoresOf<kFolded>::template K<kSageMR>::run(a, r);
  if (r < keys) withRows<SageScoresOf<kFolded>::template K, kSageMR>(keys - r, a, r);
}

// P V of one key tile (pvBits 8): what a register block of channels needs.
struct SagePvArgs {
  int64_t ng;          // words of packed P to sum (ceil(keys / kSageKpg))
  const int32_t* pp;   // packed P codes [ng][Bq]
  const int32_t* vp;   // the tile's packed V codes [dv][kSageGroups]
  const V* alpha;      // [kFwdNV] the rescale of the running O
  float* ot;           // [dv][Bq] the running sum of pCode vCode (the scales apply at the end)
};

// O^T[c] = alpha O^T[c] + f32(pv) for channels c0 .. c0 + R - 1, pv the exact int32
// sum_j pCode vCode of the tile (dV, the same for every tile of a channel, multiplies at the end).
template <int R>
struct SagePV {
  static ATTNKIT_ALWAYS_INLINE void run(const SagePvArgs& a, int64_t c0) {
    Vi acc[R][kFwdNV];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++)
      for (int v = 0; v < kFwdNV; v++) acc[r][v] = viZero();
    const int32_t* vr = a.vp + c0 * kSageGroups;
    for (int64_t g = 0; g < a.ng; g++) {
      Vi p[kFwdNV];
      for (int v = 0; v < kFwdNV; v++) p[v] = viLoad(a.pp + g * kFwdBq + v * V::L);
      #pragma GCC unroll 8
      for (int r = 0; r < R; r++) {
        const Vi vb = viSet1(vr[r * kSageGroups + g]);
        for (int v = 0; v < kFwdNV; v++) {
#if defined(ATTNKIT_ISA_AVX512)
          acc[r][v] = dpbusd(acc[r][v], p[v], vb);
#elif defined(ATTNKIT_ISA_AVX2)
          acc[r][v] = _mm256_add_epi32(acc[r][v], _mm256_madd_epi16(p[v], vb));
#else
          acc[r][v] += p[v] * vb;
#endif
        }
      }
    }
    V alpha[kFwdNV];  // in registers (the stores to ot may alias a.alpha)
    for (int v = 0; v < kFwdNV; v++) alpha[v] = a.alpha[v];
    #pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      float* o = a.ot + (c0 + r) * kFwdBq;
      for (int v = 0; v < kFwdNV; v++)
        V::fma(V::load(o + v * V::L), alpha[v], viToF(acc[r][v])).store(o + v * V::L);
    }
  }
};

// The online softmax of a tile's scores (rows j < keys of st; masked ones -inf; tileMax their max
// per lane): m_new, alpha = e^(m - m_new), p = e^(s - m_new), l = alpha l + sum p. pvBits 8 (pp
// non-null): 255 p from the exponential (l sums 255 p: the finish divides by 255), the codes
// rint(255 p) packed kSageKpg keys per word (keys past the tile's end 0); pvBits 32: p into st.
template <bool kMasked>
ATTNKIT_ALWAYS_INLINE void sageSoftmax(int64_t keys, float* m, float* l, float* st, int32_t* pp,
                                       const V* tileMax, V* alpha) {
  V mx[kFwdNV], base[kFwdNV], sum[kFwdNV];
  for (int v = 0; v < kFwdNV; v++) {
    const V mo = V::load(m + v * V::L);
    mx[v] = V::max(mo, tileMax[v]);
    // A lane without an allowed key so far keeps m = -inf; subtracting 0 keeps its p at ~0.
    base[v] = V::keep_in(mx[v], mx[v], -3.0e38f, 3.0e38f, V::zero());
    alpha[v] = sageExp(mo - base[v]);
    sum[v] = V::zero();
  }
  const V log2e = V::set1(kLog2e);
  const V off = V::set1(pp != nullptr ? kSageLog2_255 : 0.0f);
  const int64_t ng = ceilDiv(keys, kSageKpg);
  for (int64_t g = 0; g < ng; g++) {
    Vi w[kFwdNV];
    for (int v = 0; v < kFwdNV; v++) w[v] = viZero();
    #pragma GCC unroll 8
    for (int kk = 0; kk < kSageKpg; kk++) {
      const int64_t j = g * kSageKpg + kk;
      float* row = st + j * kFwdBq;
      for (int v = 0; v < kFwdNV; v++) {
        const V x = j < keys ? V::load(row + v * V::L) : V::set1(-kInf);
        const V e = sageExp2<kMasked>(V::fma(x - base[v], log2e, off));
        sum[v] = sum[v] + e;
        if (pp != nullptr) {
          w[v] = viOr(w[v], viShl(fToVi(e), kk * (32 / kSageKpg)));
        } else if (j < keys) {
          e.store(row + v * V::L);
        }
      }
    }
    if (pp != nullptr)
      for (int v = 0; v < kFwdNV; v++) viStore(pp + g * kFwdBq + v * V::L, w[v]);
  }
  for (int v = 0; v < kFwdNV; v++) {
    V::fma(V::load(l + v * V::L), alpha[v], sum[v]).store(l + v * V::L);
    mx[v].store(m + v * V::L);
  }
}

// Per-call tables of one (b, kv head): sK per key, the VNNI correction per key, packed V codes.
struct SageKv {
  const float* sk;      // [nk] sK of each key
  const int32_t* corr;  // [nk] (VNNI)
  const int32_t* vp;    // [tiles][dv][kSageGroups] (pvBits 8)
};

// Per-thread buffers of one query block (kFwdBq lanes).
struct SageScratch {
  int32_t* qp;  // [d / 4][Bq]
  float* sq;    // [Bq]
  float* st;    // [64][Bq]
  int32_t* pp;  // [kSageGroups][Bq]
  float* ot;    // [dv][Bq]
  float* m;
  float* l;
  float* diag;
  float* kept;  // fwdMask's block-sparse flags (unused: no block mask)
  float* sqsk;  // [kFwdNV][64] f32(sQ sK) of the tile (granularity block / warp)
  float* bias;  // [64] the tile's smoothQ bias times a power-of-two scale (SageQkArgs::folded)
  static int64_t floats(int64_t d, int64_t dv) {
    return (d / 4 + 1 + kSageTile + kSageGroups + dv + 4) * kFwdBq + (kFwdNV + 1) * kSageTile;
  }
  SageScratch(float* base, int64_t d, int64_t dv) {
    qp = reinterpret_cast<int32_t*>(base);
    sq = base + d / 4 * kFwdBq;
    st = sq + kFwdBq;
    pp = reinterpret_cast<int32_t*>(st + kSageTile * kFwdBq);
    ot = reinterpret_cast<float*>(pp + kSageGroups * kFwdBq);
    m = ot + dv * kFwdBq;
    l = m + kFwdBq;
    diag = l + kFwdBq;
    kept = diag + kFwdBq;
    sqsk = kept + kFwdBq;
    bias = sqsk + kFwdNV * kSageTile;
  }
};

#if defined(ATTNKIT_ISA_AVX512)
// dst[c dstStride + j] = src[j srcStride + c] (j, c < 16) for 32-bit words, each word xor-ed
// with `flip`: 64 shuffles in registers instead of 256 strided scalar moves. The block's packed
// Q (64 rows x d / 4 words) and its O (dv x 64 lanes, back to rows) are such transposes; done
// by scalar moves they took 3% of the forward at (1, 8, 2048, 64).
ATTNKIT_ALWAYS_INLINE void sageTranspose16(const int32_t* src, int64_t srcStride, int32_t* dst,
                                           int64_t dstStride, int32_t flip = 0) {
  __m512i t[16], u[16], v[16];
  const __m512i x = _mm512_set1_epi32(flip);
  for (int i = 0; i < 8; i++) {
    const __m512i a = _mm512_xor_si512(_mm512_loadu_si512(src + 2 * i * srcStride), x);
    const __m512i b = _mm512_xor_si512(_mm512_loadu_si512(src + (2 * i + 1) * srcStride), x);
    t[2 * i] = _mm512_unpacklo_epi32(a, b);
    t[2 * i + 1] = _mm512_unpackhi_epi32(a, b);
  }
  for (int i = 0; i < 4; i++) {
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int h = 0; h < 2; h++)
    for (int k = 0; k < 4; k++) {
      v[8 * h + k] = _mm512_shuffle_i32x4(u[8 * h + k], u[8 * h + 4 + k], 0x88);
      v[8 * h + 4 + k] = _mm512_shuffle_i32x4(u[8 * h + k], u[8 * h + 4 + k], 0xdd);
    }
  for (int k = 0; k < 8; k++) {
    _mm512_storeu_si512(dst + k * dstStride, _mm512_shuffle_i32x4(v[k], v[8 + k], 0x88));
    _mm512_storeu_si512(dst + (8 + k) * dstStride, _mm512_shuffle_i32x4(v[k], v[8 + k], 0xdd));
  }
}
#endif

// One block of query rows [i0, i0 + rows) of (b, h): its key tiles in order, then O and LSE.
inline void sageBlock(const SageForwardCall& c, const AttnProblem& band, const SageKv& kv,
                      int64_t b, int64_t h, int64_t i0, const SageScratch& sc) {
  const SageDims& z = c.z;
  const int64_t d = z.d, dv = z.dv, nq = z.nq, nk = z.nk;
  const int64_t hk = h / z.group;
  const int64_t rows = imin(kFwdBq, nq - i0);
  const Seq s{nq, nk, nk - nq, b};
  // The block: packed Q codes (VNNI: + 128, as u8), each lane's sQ, empty statistics.
  const int8_t* qc = c.qCodes + ((b * z.hq + h) * nq + i0) * d;
  const float* qs = c.qScale + (b * z.hq + h) * z.nQG;
  int64_t g0 = 0;
#if defined(ATTNKIT_ISA_AVX512)
  // Whole blocks: 16 x 16 transposes of the rows' 4-code words (codes are 4-byte aligned: d is
  // a multiple of 16).
  if (rows == kFwdBq)
    for (; g0 + 16 <= d / 4; g0 += 16)
      for (int64_t ib = 0; ib < kFwdBq; ib += 16)
        sageTranspose16(reinterpret_cast<const int32_t*>(qc + ib * d) + g0, d / 4,
                        sc.qp + g0 * kFwdBq + ib, kFwdBq, static_cast<int32_t>(0x80808080u));
#endif
  for (int64_t g = g0; g < d / 4; g++) {
    for (int64_t i = 0; i < kFwdBq; i++) {
      int32_t w = i < rows ? sageLoad32(qc + i * d + 4 * g) : 0;
#if defined(ATTNKIT_ISA_AVX512)
      w ^= static_cast<int32_t>(0x80808080u);  // s8 + 128 as u8 in each byte
#endif
      sc.qp[g * kFwdBq + i] = w;
    }
  }
  // SageQkArgs::folded: sQ itself carries the scale (exactly), so f32(sQ sK) does too.
  int scaleExp = 0;
  const float scaleAbs = std::fabs(c.scale);
  const bool folded = std::fabs(std::frexp(c.scale, &scaleExp)) == 0.5f && scaleAbs <= 1.0f &&
                      scaleAbs >= std::numeric_limits<float>::min();
  const float sqScale = folded ? c.scale : 1.0f;
  for (int64_t i = 0; i < kFwdBq; i++) {
    sc.sq[i] = i < rows ? qs[sageQGroup(i0 + i, z.granularity)] * sqScale : 0.0f;
    sc.m[i] = -kInf;
    sc.l[i] = 0.0f;
    sc.diag[i] = static_cast<float>(i0 + i + s.off);
  }
  for (int64_t i = 0; i < dv * kFwdBq; i++) sc.ot[i] = 0.0f;
  // fwdMask's view of the block (rows in lanes, diag) and of the score tile.
  FwdBlockState blk{nullptr, sc.ot, sc.m, sc.l, sc.diag, i0, rows};
  FwdScratch fsc(sc.st, d, dv, kSageTile);
  fsc.st = sc.st;
  fsc.kept = sc.kept;

  SageQkArgs qa;
  qa.dg = d / 4;
  qa.d = d;
  qa.qp = sc.qp;
  qa.sq = sc.sq;
  // Block and warp groups span 128 and 16 rows, aligned, so every vector of lanes (16 rows at
  // most, from a multiple of kFwdBq) shares one sQ: f32(sQ sK) per vector and key is a table
  // of the tile (one broadcast operand per score instead of a product).
  const bool sharedSq = z.granularity != SageGranularity::kThread;
  qa.sqsk = sharedSq ? sc.sqsk : nullptr;
  qa.scale = c.scale;
  qa.folded = folded;
  qa.st = sc.st;
  const int8_t* kc = c.kCodes + (b * z.hkv + hk) * nk * d;
  const float* bias =
      c.bias != nullptr ? c.bias + ((b * z.hq + h) * z.nQB + i0 / kSageQBlock) * nk : nullptr;
  SagePvArgs pa;
  pa.pp = sc.pp;
  pa.ot = sc.ot;
  const float* vf = c.v != nullptr ? c.v + (b * z.hkv + hk) * nk * dv : nullptr;

  const int64_t jlo = keyLo(band, s, i0), jhi = keyHi(band, s, i0 + rows - 1);
  for (int64_t j0 = jlo / kSageTile * kSageTile; j0 < jhi; j0 += kSageTile) {
    const int64_t j1 = imin(j0 + kSageTile, nk);
    const Vis vis = classifyTile(band, s, nullptr, i0, i0 + rows, j0, j1);
    if (vis == Vis::kSkip) continue;
    const int64_t keys = j1 - j0;
    qa.k = kc + j0 * d;
    qa.corr = kv.corr != nullptr ? kv.corr + j0 : nullptr;
    qa.sk = kv.sk + j0;
    qa.bias = bias != nullptr ? bias + j0 : nullptr;
    if (qa.folded && bias != nullptr) {
      for (int64_t j = 0; j < keys; j++) sc.bias[j] = qa.bias[j] * c.scale;
      qa.bias = sc.bias;
    }
    if (sharedSq) {
      for (int v = 0; v < kFwdNV; v++) {
        const float sqv = sc.sq[v * V::L];
        for (int64_t j = 0; j < keys; j++) sc.sqsk[v * kSageTile + j] = sqv * qa.sk[j];
      }
    }
    // Masked scores (-inf) in the tile: the partial tiles' and the padding past a short tile's
    // last key word.
    const bool masked = vis == Vis::kPartial || keys % kSageKpg != 0;
    V mx[kFwdNV];
    for (int v = 0; v < kFwdNV; v++) mx[v] = V::set1(-kInf);
    qa.mx = mx;
    if (qa.folded)
      sageScores<true>(qa, keys);
    else
      sageScores<false>(qa, keys);
    if (vis == Vis::kPartial) {
      // The masked tile's max (the scores' epilogue saw them unmasked).
      fwdMask(band, nullptr, blk, j0, j1, fsc);
      for (int v = 0; v < kFwdNV; v++) mx[v] = V::set1(-kInf);
      for (int64_t j = 0; j < keys; j++)
        for (int v = 0; v < kFwdNV; v++) mx[v] = V::max(mx[v], V::load(sc.st + j * kFwdBq + v * V::L));
    }
    V alpha[kFwdNV];
    if (c.pvBits == 8) {
      if (masked)
        sageSoftmax<true>(keys, sc.m, sc.l, sc.st, sc.pp, mx, alpha);
      else
        sageSoftmax<false>(keys, sc.m, sc.l, sc.st, sc.pp, mx, alpha);
      pa.ng = ceilDiv(keys, kSageKpg);
      pa.vp = kv.vp + (j0 / kSageTile) * dv * kSageGroups;
      pa.alpha = alpha;
      int64_t ch = 0;
      for (; ch + kSageMR <= dv; ch += kSageMR) SagePV<kSageMR>::run(pa, ch);
      if (ch < dv) withRows<SagePV, kSageMR>(dv - ch, pa, ch);
    } else {
      sageSoftmax<true>(keys, sc.m, sc.l, sc.st, nullptr, mx, alpha);
      fwdPV(dv, keys, sc.st, vf + j0 * dv, dv, sc.ot, alpha);
    }
  }
  // O = acc / l (pvBits 8: acc = dV sum pCode vCode), LSE = m + ln l; a row that never saw an
  // allowed key (m = -inf): O = 0, LSE = -inf.
  float* o = c.o + ((b * z.hq + h) * nq + i0) * dv;
  float* lse = c.lse != nullptr ? c.lse + (b * z.hq + h) * nq + i0 : nullptr;
  const float* dV = c.pvBits == 8 ? c.vScale + (b * z.hkv + hk) * dv : nullptr;
  // pvBits 8: l sums 255 p.
  const float lUnit = c.pvBits == 8 ? 255.0f : 1.0f;
  // Lanes first (vectors along the rows, as ot holds them): ot[ch][i] = ot dV / l in place, the
  // spec's rounding (a product, then a division); then a transposing copy into O's rows (a
  // division per element in a strided scalar loop before: ~1% of the forward at D 64).
  float* lv = sc.l;  // l in the finish's unit, per lane
  for (int v = 0; v < kFwdNV; v++) (V::load(sc.l + v * V::L) / V::set1(lUnit)).store(lv + v * V::L);
  for (int64_t ch = 0; ch < dv; ch++) {
    float* ot = sc.ot + ch * kFwdBq;
    const V scale = V::set1(dV != nullptr ? dV[ch] : 1.0f);
    for (int v = 0; v < kFwdNV; v++) {
      const V x = V::load(ot + v * V::L);
      ((dV != nullptr ? x * scale : x) / V::load(lv + v * V::L)).store(ot + v * V::L);
    }
  }
  int64_t iDone = 0;  // rows [0, iDone) copied by transposes (dead rows are zeroed below)
#if defined(ATTNKIT_ISA_AVX512)
  if (dv % 16 == 0)
    for (; iDone + 16 <= rows; iDone += 16)
      for (int64_t ch = 0; ch < dv; ch += 16)
        sageTranspose16(reinterpret_cast<const int32_t*>(sc.ot + ch * kFwdBq + iDone), kFwdBq,
                        reinterpret_cast<int32_t*>(o + iDone * dv + ch), dv);
#endif
  for (int64_t i = 0; i < rows; i++) {
    const float li = lv[i];
    if (sc.m[i] > -kInf && li > 0.0f) {
      if (i >= iDone)
        for (int64_t ch = 0; ch < dv; ch++) o[i * dv + ch] = sc.ot[ch * kFwdBq + i];
      if (lse != nullptr)
        lse[i] = static_cast<float>(static_cast<double>(sc.m[i]) + std::log(static_cast<double>(li)));
    } else {
      for (int64_t ch = 0; ch < dv; ch++) o[i * dv + ch] = 0.0f;
      if (lse != nullptr) lse[i] = -kInf;
    }
  }
}

// The tables of SageKv for (b, kv head) t = b hkv + hk.
inline void sagePrepare(const SageForwardCall& c, int64_t t, float* sk, int32_t* corr,
                        int32_t* vp) {
  const SageDims& z = c.z;
  const int64_t nk = z.nk, d = z.d, dv = z.dv;
  const int8_t* kc = c.kCodes + t * nk * d;
  const float* ks = c.kScale + t * z.nKG;
  for (int64_t j = 0; j < nk; j++) {
    sk[j] = ks[sageKGroup(j, z.granularity)];
    if (corr != nullptr) {
      int32_t sum = 0;
      for (int64_t ch = 0; ch < d; ch++) sum += kc[j * d + ch];
      corr[j] = 128 * sum;
    }
  }
  if (vp == nullptr) return;
  const int8_t* vc = c.vCodes + t * nk * dv;
  const int64_t tiles = ceilDiv(nk, kSageTile);
  for (int64_t tt = 0; tt < tiles; tt++) {
    int32_t* out = vp + tt * dv * kSageGroups;
#if defined(ATTNKIT_ISA_AVX512)
    if ((tt + 1) * kSageTile <= nk && dv % 64 == 0) {
      // A whole tile's words are its codes transposed (byte 4 g + kk of channel ch's words is
      // key 4 g + kk), 64 channels at a time: byte unpacks of 4 key rows give each channel's
      // word of those 4 keys (w[q], per 128-bit block b: channels 16 b + 4 q .. + 3), then
      // 16 x 16 word transposes put the 16 words of a channel in its row.
      alignas(64) int32_t w[4][kSageGroups][16];
      const int8_t* src = vc + tt * kSageTile * dv;
      for (int64_t c0 = 0; c0 < dv; c0 += 64) {
        for (int64_t g = 0; g < kSageGroups; g++) {
          const int8_t* r = src + 4 * g * dv + c0;
          const __m512i r0 = _mm512_loadu_si512(r), r1 = _mm512_loadu_si512(r + dv);
          const __m512i r2 = _mm512_loadu_si512(r + 2 * dv), r3 = _mm512_loadu_si512(r + 3 * dv);
          const __m512i l01 = _mm512_unpacklo_epi8(r0, r1), h01 = _mm512_unpackhi_epi8(r0, r1);
          const __m512i l23 = _mm512_unpacklo_epi8(r2, r3), h23 = _mm512_unpackhi_epi8(r2, r3);
          _mm512_store_si512(w[0][g], _mm512_unpacklo_epi16(l01, l23));
          _mm512_store_si512(w[1][g], _mm512_unpackhi_epi16(l01, l23));
          _mm512_store_si512(w[2][g], _mm512_unpacklo_epi16(h01, h23));
          _mm512_store_si512(w[3][g], _mm512_unpackhi_epi16(h01, h23));
        }
        // Lane 4 b + i of w[q] is channel c0 + 16 b + 4 q + i; the transpose's row 4 b + i holds
        // that channel's 16 words.
        alignas(64) int32_t tr[16][kSageGroups];
        for (int q = 0; q < 4; q++) {
          sageTranspose16(&w[q][0][0], 16, &tr[0][0], kSageGroups);
          for (int b = 0; b < 4; b++)
            for (int i = 0; i < 4; i++)
              std::memcpy(out + (c0 + 16 * b + 4 * q + i) * kSageGroups, tr[4 * b + i],
                          sizeof(int32_t) * kSageGroups);
        }
      }
      continue;
    }
#endif
    for (int64_t ch = 0; ch < dv; ch++) {
      for (int64_t g = 0; g < kSageGroups; g++) {
        uint32_t w = 0;
        for (int kk = 0; kk < kSageKpg; kk++) {
          const int64_t j = tt * kSageTile + g * kSageKpg + kk;
          const int32_t x = j < nk ? vc[j * dv + ch] : 0;
          // VNNI: s8 bytes; AVX2: s16 halves; scalar: the int32 itself.
          const uint32_t bits = kSageKpg == 4   ? static_cast<uint32_t>(x) & 0xffu
                                : kSageKpg == 2 ? static_cast<uint32_t>(x) & 0xffffu
                                                : static_cast<uint32_t>(x);
          w |= bits << (kk * (32 / kSageKpg));
        }
        out[ch * kSageGroups + g] = static_cast<int32_t>(w);
      }
    }
  }
}

inline const char* sageForward(const SageForwardCall& c) {
  const SageDims& z = c.z;
  const int64_t nkv = z.batch * z.hkv;
  const int64_t tiles = ceilDiv(z.nk, kSageTile);
  // One buffer: sK log2 e and the correction per key, packed V, per-thread block scratch.
  const int64_t fSk = roundUp(nkv * z.nk, 16);
  const int64_t fCorr = kSageCorrection ? fSk : 0;
  const int64_t fVp = c.pvBits == 8 ? roundUp(nkv * tiles * z.dv * kSageGroups, 16) : 0;
  const int64_t per = roundUp(SageScratch::floats(z.d, z.dv), 16);
  SageBuffer buf(fSk + fCorr + fVp + per * poolThreads());
  if (!buf.ok()) return kOutOfMemory;
  float* skAll = buf.get();
  int32_t* corrAll = reinterpret_cast<int32_t*>(skAll + fSk);
  int32_t* vpAll = reinterpret_cast<int32_t*>(skAll + fSk + fCorr);
  float* scratch = skAll + fSk + fCorr + fVp;
  auto kvOf = [&](int64_t t) {
    SageKv kv;
    kv.sk = skAll + t * z.nk;
    kv.corr = kSageCorrection ? corrAll + t * z.nk : nullptr;
    kv.vp = c.pvBits == 8 ? vpAll + t * tiles * z.dv * kSageGroups : nullptr;
    return kv;
  };
  auto prep = [&](int64_t t, int) {
    const SageKv kv = kvOf(t);
    sagePrepare(c, t, const_cast<float*>(kv.sk), const_cast<int32_t*>(kv.corr),
                const_cast<int32_t*>(kv.vp));
  };
  parallelCapped(nkv, c.threads, prep);

  // The band rule of attention (spec.ts keyRange / classifyTile) from left / right alone.
  AttnProblem band{};
  band.left = c.left;
  band.right = c.right;
  // Tasks: (b, h, block of kFwdBq rows), head by head, the longest bands first within a head.
  std::vector<Task> tasks;
  for (int64_t b = 0; b < z.batch; b++) {
    const Seq s{z.nq, z.nk, z.nk - z.nq, b};
    for (int64_t h = 0; h < z.hq; h++) {
      for (int64_t i0 = 0; i0 < z.nq; i0 += kFwdBq) {
        const int64_t rows = imin(kFwdBq, z.nq - i0);
        const int64_t keys = imax(0, keyHi(band, s, i0 + rows - 1) - keyLo(band, s, i0));
        tasks.push_back({b, h, i0, keys * rows + z.d});
      }
    }
  }
  sortByCostPerHead(tasks);
  auto body = [&](int64_t t, int thread) {
    const Task& task = tasks[t];
    const SageScratch sc(scratch + per * thread, z.d, z.dv);
    sageBlock(c, band, kvOf(task.b * z.hkv + task.h / z.group), task.b, task.h, task.x0, sc);
  };
  parallelCapped(static_cast<int64_t>(tasks.size()), c.threads, body);
  return nullptr;
}

}  // namespace ATTNKIT_NS
}  // namespace attnkit
