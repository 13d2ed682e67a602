// The ops one ISA translation unit registers (engine.h OpKernel): adapters from the op's call
// struct to the kernel templates of this ISA. A kernels_<isa>.cc includes it after the kernel
// headers; an ISA with kernels for only some ops (AVX-512 VNNI: the int8 ones) lists its own.
#pragma once

#include "flash_backward.h"
#include "flash_forward.h"
#include "gemm_impl.h"
#include "gla_backward.h"
#include "gla_recurrent.h"
#include "nn_ops.h"
#include "sage_ops.h"

namespace attnkit {
namespace ATTNKIT_NS {

inline const char* runAttentionForward(const void* call) {
  const auto& c = *static_cast<const AttentionForwardCall*>(call);
  return flashForward(c.p, c.a);
}

inline const char* runAttentionBackward(const void* call) {
  const auto& c = *static_cast<const AttentionBackwardCall*>(call);
  return flashBackward(c.p, c.a);
}

inline void scratchAttentionBackward(const void* call, int64_t* perThread, int64_t* shared) {
  flashBackwardScratch(static_cast<const AttentionBackwardCall*>(call)->p, perThread, shared);
}

inline const char* runGemm(const void* call) { return gemm(static_cast<const GemmCall*>(call)->g); }

inline const char* runGlaForward(const void* call) {
  const auto& c = *static_cast<const GlaForwardCall*>(call);
  return c.z.recurrent ? glaRecurrentForward(c) : glaForward(c);
}

inline const char* runGlaBackward(const void* call) {
  const auto& c = *static_cast<const GlaBackwardCall*>(call);
  return c.z.recurrent ? glaRecurrentBackward(c) : glaBackward(c);
}

inline void scratchGlaBackward(const void* call, int64_t* perThread, int64_t* shared) {
  const GlaDims& z = static_cast<const GlaBackwardCall*>(call)->z;
  if (z.recurrent) {
    *perThread = glaRecurrentBackwardFloats(z);
    *shared = 0;
    return;
  }
  glaBackwardScratch(z, perThread, shared);
}

constexpr OpKernel kOps[] = {
    {kOpAttentionForward, runAttentionForward, nullptr},
    {kOpAttentionBackward, runAttentionBackward, scratchAttentionBackward},
    {kOpGemm, runGemm, nullptr},
    {kOpGlaForward, runGlaForward, nullptr},
    {kOpGlaBackward, runGlaBackward, scratchGlaBackward},
    {kOpSageQuantize, runSageQuantize, nullptr},
    {kOpNnMap, runNnMap, nullptr},
    {kOpNnUnary, runNnUnary, nullptr},
    {kOpNnSoftmax, runNnSoftmax, nullptr},
    {kOpNnNorm, runNnNorm, nullptr},
    {kOpNnNormBackward, runNnNormBackward, nullptr},
    {kOpNnCrossEntropy, runNnCrossEntropy, nullptr},
    {kOpNnCrossEntropyBackward, runNnCrossEntropyBackward, nullptr},
    {kOpNnGather, runNnGather, nullptr},
    {kOpNnScatterAdd, runNnScatterAdd, nullptr},
    {kOpNnRope, runNnRope, nullptr},
    {kOpNnMatmul, runNnMatmul, nullptr},
    {kOpNnAdamw, runNnAdamw, nullptr},
    {kOpNnSgd, runNnSgd, nullptr},
    {kOpNnSumSquares, runNnSumSquares, nullptr},
    {kOpNnDecodeHalf, runNnDecodeHalf, nullptr},
#if !defined(ATTNKIT_ISA_AVX512)
    // AVX-512's SageAttention2 kernel is VNNI's (kernels_avx512vnni.cc); without VNNI the
    // registry falls back to AVX2's.
    {kOpSageForward, runSageForward, nullptr},
#endif
};

}  // namespace ATTNKIT_NS
}  // namespace attnkit
