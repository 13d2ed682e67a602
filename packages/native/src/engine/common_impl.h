// Helpers shared by the kernel templates of one ISA translation unit (see simd.h on why they
// live in the ISA namespace).
#pragma once

#include "engine.h"
#include "simd.h"

namespace attnkit {
namespace ATTNKIT_NS {

constexpr const char* kOutOfMemory = "out of memory for the kernel's scratch buffers";

// Runs f(task, thread) for task in [0, n) on the pool.
template <class F>
void parallel(int64_t n, F& f) {
  parallelFor(
      n, [](void* ctx, int64_t task, int thread) { (*static_cast<F*>(ctx))(task, thread); }, &f);
}

// Owning aligned float buffer (no standard containers here: their out-of-line template code
// would be shared with other translation units built for other ISAs).
class Floats {
 public:
  Floats() = default;
  explicit Floats(int64_t n) : p_(allocFloats(n)) {}
  Floats(const Floats&) = delete;
  Floats& operator=(const Floats&) = delete;
  ~Floats() { freeFloats(p_); }
  void reset(int64_t n) {
    freeFloats(p_);
    p_ = allocFloats(n);
  }
  float* get() const { return p_; }
  bool ok() const { return p_ != nullptr; }

 private:
  float* p_ = nullptr;
};

inline int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t roundUp(int64_t a, int64_t b) { return ceilDiv(a, b) * b; }

}  // namespace ATTNKIT_NS
}  // namespace attnkit
