// Portable kernels (no ISA flags): the path for CPUs without AVX2 and for non-x86 builds.
#define ATTNKIT_NS scalar
#include "simd.h"

namespace attnkit {
namespace scalar {
constexpr int kGemmMR = 4, kGemmNV = 8;  // 4 x 8 tile of scalars
constexpr int64_t kGemmKC = 256, kGemmMC = 128, kGemmNC = 2048;
constexpr int kFwdNV = 8, kFwdMR = 4;  // 8 query rows per block
constexpr int64_t kFwdTileK = 64, kFwdMaxSub = 8;
constexpr int kBwdNV = 8, kBwdMR = 4;  // 8 keys per block
constexpr int64_t kBwdTileQ = 64;
constexpr int kDqMR = 4, kDqCV = 8;
}  // namespace scalar
}  // namespace attnkit

#include "ops_impl.h"

namespace attnkit {
const IsaKernels* kernelsScalar() {
  static const IsaKernels table{"scalar", scalar::kOps,
                                static_cast<int>(sizeof(scalar::kOps) / sizeof(OpKernel))};
  return &table;
}
}  // namespace attnkit
