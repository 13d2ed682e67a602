// AVX-512 kernels (compiled with -mavx512f -mavx512bw -mavx512dq -mavx512vl -mfma): 32 zmm
// registers hold up to 24 accumulators of 16 floats per micro-kernel.
#define ATTNKIT_NS avx512
#define ATTNKIT_ISA_AVX512 1
#include "simd.h"

namespace attnkit {
namespace avx512 {
// 6 x 64 tile; a long KC amortises the C tile's load and store (measured best on Zen 5: the
// A micro-panel stays in L1 while the B micro-panel streams from L2).
constexpr int kGemmMR = 6, kGemmNV = 4;
constexpr int64_t kGemmKC = 1024, kGemmMC = 48, kGemmNC = 4096;
constexpr int kFwdNV = 4, kFwdMR = 6;  // 64 query lanes, 6 x 4 accumulators
constexpr int64_t kFwdTileK = 64, kFwdMaxSub = 4;
constexpr int kBwdNV = 4, kBwdMR = 6;  // 64 key lanes
constexpr int64_t kBwdTileQ = 64;
constexpr int kDqMR = 6, kDqCV = 4;
}  // namespace avx512
}  // namespace attnkit

#include "ops_impl.h"

namespace attnkit {
const IsaKernels* kernelsAvx512() {
  static const IsaKernels table{"avx512", avx512::kOps,
                                static_cast<int>(sizeof(avx512::kOps) / sizeof(OpKernel))};
  return &table;
}
}  // namespace attnkit
