// AVX-512 VNNI kernels (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mavx512vnni
// -mfma): the int8 ops only (SageAttention2's pre-pass and forward, vpdpbusd). The registry
// runs every other op of this ISA on the avx512 kernels (the best ISA per op at or below the
// chosen one), so the FA2 and GEMM kernels are not compiled twice.
#define ATTNKIT_NS avx512vnni
#define ATTNKIT_ISA_AVX512 1
#define ATTNKIT_SAGE_VNNI 1
#include "simd.h"

namespace attnkit {
namespace avx512vnni {
// The avx512 parameters (the Sage kernel reuses the FA2 forward's layout: 64 query lanes).
constexpr int kGemmMR = 6, kGemmNV = 4;
constexpr int64_t kGemmKC = 1024, kGemmMC = 48, kGemmNC = 4096;
constexpr int kFwdNV = 4, kFwdMR = 6;
constexpr int64_t kFwdTileK = 64, kFwdMaxSub = 4;
constexpr int kBwdNV = 4, kBwdMR = 6;
constexpr int64_t kBwdTileQ = 64;
constexpr int kDqMR = 6, kDqCV = 4;
}  // namespace avx512vnni
}  // namespace attnkit

#include "sage_ops.h"

namespace attnkit {
namespace avx512vnni {
constexpr OpKernel kOps[] = {
    {kOpSageQuantize, runSageQuantize, nullptr},
    {kOpSageForward, runSageForward, nullptr},
};
}  // namespace avx512vnni

const IsaKernels* kernelsAvx512Vnni() {
  static const IsaKernels table{"avx512vnni", avx512vnni::kOps,
                                static_cast<int>(sizeof(avx512vnni::kOps) / sizeof(OpKernel))};
  return &table;
}
}  // namespace attnkit
