// The SageAttention2 ops of one ISA translation unit (engine.h kOpSageQuantize, kOpSageForward):
// adapters from the call structs to sage_quantize.h / sage_forward.h. sage.forward is compiled
// only where the ISA has an integer product for it (VNNI on AVX-512, AVX2, scalar).
#pragma once

#include "sage_quantize.h"
#if !defined(ATTNKIT_ISA_AVX512) || defined(ATTNKIT_SAGE_VNNI)
#include "sage_forward.h"
#endif

namespace attnkit {
namespace ATTNKIT_NS {

inline const char* runSageQuantize(const void* call) {
  return sageQuantize(*static_cast<const SageQuantizeCall*>(call));
}

#if !defined(ATTNKIT_ISA_AVX512) || defined(ATTNKIT_SAGE_VNNI)
inline const char* runSageForward(const void* call) {
  return sageForward(*static_cast<const SageForwardCall*>(call));
}
#endif

}  // namespace ATTNKIT_NS
}  // namespace attnkit
