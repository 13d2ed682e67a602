// AVX2 + FMA kernels (compiled with -mavx2 -mfma): 16 ymm registers, so 12 accumulators of 8
// floats per micro-kernel.
#define ATTNKIT_NS avx2
#define ATTNKIT_ISA_AVX2 1
#include "simd.h"

namespace attnkit {
namespace avx2 {
constexpr int kGemmMR = 6, kGemmNV = 2;  // 6 x 16 tile
constexpr int64_t kGemmKC = 512, kGemmMC = 72, kGemmNC = 4096;
constexpr int kFwdNV = 2, kFwdMR = 6;  // 16 query lanes
constexpr int64_t kFwdTileK = 64, kFwdMaxSub = 8;
constexpr int kBwdNV = 2, kBwdMR = 6;  // 16 key lanes
constexpr int64_t kBwdTileQ = 64;
constexpr int kDqMR = 2, kDqCV = 4;
}  // namespace avx2
}  // namespace attnkit

#include "ops_impl.h"

namespace attnkit {
const IsaKernels* kernelsAvx2() {
  static const IsaKernels table{"avx2", avx2::kOps,
                                static_cast<int>(sizeof(avx2::kOps) / sizeof(OpKernel))};
  return &table;
}
}  // namespace attnkit
