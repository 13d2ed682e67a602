// Plain-data interface between the N-API layer, the thread pool and the per-ISA kernels.
// Nothing here is inline code, so the ISA translation units share only these layouts.
#pragma once

#include <cstdint>

namespace attnkit {

// KERNELS.md "Common", resolved as in packages/attention/src/spec.ts (SoftmaxProblem).
struct AttnProblem {
  bool thd;  // layout THD (packed varlen) instead of BHND
  int64_t batch, hq, hkv, group, d, dv;
  float scale;
  int64_t left, right;  // window with causal folded in; -1 = unbounded
  const int32_t* seqQ;
  const int32_t* seqK;
  const int32_t* startQ;
  const int32_t* startK;
  int64_t maxSeqQ, maxSeqK, totalQ, totalK;
  // Block-sparse mask (null when dense): mask[b * batchStride + h * headStride + qb * nbk + kb].
  const uint8_t* bsMask;
  int64_t bsBlockQ, bsBlockK, bsNbq, bsNbk, bsBatchStride, bsHeadStride;
  // Tile hints (0 = the ISA's default): forward key tile, backward query row block.
  int64_t tileK, tileQ;
};

struct FlashForwardArgs {
  const float* q;
  const float* k;
  const float* v;
  float* o;
  float* lse;
};

struct FlashBackwardArgs {
  const float* q;
  const float* k;
  const float* v;
  const float* o;
  const float* lse;
  const float* dO;
  float* dq;
  float* dk;
  float* dv;
};

// C = alpha * op(A) op(B) + beta * C, row-major; op(A) is m x k, op(B) is k x n.
struct GemmArgs {
  bool transA, transB;
  int64_t m, n, k;
  float alpha, beta;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float* c;
  int64_t ldc;
};

// Each kernel returns nullptr on success or a static message (out of memory).
struct KernelTable {
  const char* isa;
  const char* (*gemm)(const GemmArgs&);
  const char* (*flashForward)(const AttnProblem&, const FlashForwardArgs&);
  const char* (*flashBackward)(const AttnProblem&, const FlashBackwardArgs&);
  // Floats flashBackward allocates for p: per pool thread, and once (shared).
  void (*flashBackwardScratch)(const AttnProblem& p, int64_t* perThread, int64_t* shared);
};

const KernelTable* kernelsScalar();
#if defined(ATTNKIT_X86)
const KernelTable* kernelsAvx2();
const KernelTable* kernelsAvx512();
#endif

// Persistent pool (pool.cc). parallelFor runs fn(ctx, task, thread) for task in [0, n), handing
// tasks out in order to the calling thread and the workers; thread < poolThreads(). One
// parallel region runs at a time; concurrent callers wait their turn.
using TaskFn = void (*)(void* ctx, int64_t task, int thread);
void parallelFor(int64_t n, TaskFn fn, void* ctx);
int poolThreads();

// 64-byte aligned allocation (zero bytes gives a valid pointer); nullptr when out of memory.
float* allocFloats(int64_t count);
void freeFloats(float* p);

}  // namespace attnkit
