// Plain-data interface between the N-API layer, the thread pool and the per-ISA kernels.
// Nothing here is inline code, so the ISA translation units share only these layouts.
#pragma once

#include <cstdint>

namespace attnkit {

// How a row of scores becomes weights (packages/skeleton/src/hooks.ts NormalizeHook).
enum class Normalize : int32_t {
  kSoftmax,  // online max / sum, O = acc / l, LSE = m + log l; optional per-head sinks
  kSigmoid,  // w = sigmoid(s + bias[b]), O = sum w v, no LSE (FlashSigmoid)
  kSilu,     // w = siluFactor * s sigmoid(s), O = sum w v, no LSE (HSTU: factor 1 / maxSeqLen)
};

// Built-in score mods (packages/attention/src/mods.ts), applied in order after the scale.
enum class ScoreModKind : int32_t {
  kSoftcap,  // s <- cap * tanh(s / cap)
  kAlibi,    // s <- s - slopes[h] * |i + nk - nq - j|
  kBias,     // s <- s + bias[b * batchStride + h * headStride + i * rowStride + j]
};

struct ScoreMod {
  ScoreModKind kind;
  float cap;
  const float* slopes;  // [hq]
  const float* bias;
  int64_t batchStride, headStride, rowStride;
  // Backward of a bias with grad: dS (the gradient at the score after the scale and the mods'
  // chain rule, 0 where masked) stored at dbias[b * dbBatchStride + h * dbHeadStride +
  // i * rowStride + j]; null = none. The caller gives every (b, h) its own elements (a broadcast
  // bias gets a [B, Hq, R, C] buffer reduced afterwards), so the stores never collide.
  float* dbias;
  int64_t dbBatchStride, dbHeadStride;
};

constexpr int kMaxScoreMods = 8;

// KERNELS.md "Common" (and "Sigmoid attention"), resolved as in packages/attention/src/spec.ts
// (AttentionProblem), with the skeleton's hooks: normalisation and score mods.
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
  // Forward schedule: 1 (or 0) = band (one task per query group walks its whole key band);
  // > 1 = split-K (FlashDecoding): each group's visited key tiles are cut into `splits`
  // contiguous ranges, computed as partial (m, l, acc) by parallel tasks and then combined.
  int64_t splits;
  // > 0 = stream-K (LeanAttention) with this many workers instead: the units are the
  // (b, h, query block of kFwdBq rows) in that order, each with the key tiles its band visits;
  // stream_k.h planStreamK cuts their concatenation into `streamKWorkers` contiguous ranges
  // balanced to one tile, one pool task per worker reduces its pieces into partial (m, l, acc)
  // slots, and a fix-up merges each unit's pieces as split-K's combine does. 0 = off; the
  // caller never sets both this and splits > 1.
  int64_t streamKWorkers;
  Normalize normalize;
  const float* sinks;        // softmax: one logit per query head joining every row, or null
  const float* sigmoidBias;  // sigmoid: b of sigmoid(s + b), one per batch entry
  float siluFactor;          // silu: c of w = c silu(s)
  int32_t numMods;
  ScoreMod mods[kMaxScoreMods];
  // HSTU mask (packages/skeleton/src/hooks.ts HstuMaskHook; generative-recommenders' numTargets,
  // contextualSeqLen, maxAttnLen, minFullAttnSeqLen): null hstuTargets = none (the code paths of
  // problems without it are unchanged). With it every visited tile is partial and each pair of
  // sequence b is tested by flash_common.h hstuAllowed on top of the band.
  const int32_t* hstuTargets;  // [batch]
  int64_t hstuContextual, hstuMaxAttnLen, hstuMinFull;
  bool hstuCausal;
  // HSTU's bucketed rab (packages/skeleton/src/hstu-rab.ts HstuRabHook): z += pos[h', pc] +
  // time[h', tc] on the scaled score, before the mods (flash_hooks.h RabHead). Null rabPos and
  // rabTime = none (problems without it keep their code paths). h' = h, or 0 for a table of one
  // row; pc = clamp(j - i + (rabNumPos - 1) / 2, 0, rabNumPos - 1); tc = the last t with
  // rabThresholds[t] <= |rabNextTime[s + i] - rabKeyTime[s + j]| (i = r + nk - nq; s = startK[b],
  // BHND: b maxSeqK).
  const float* rabPos;  // [rabPosHeads, rabNumPos]
  int64_t rabPosHeads, rabNumPos;
  const float* rabTime;  // [rabTimeHeads, rabNumTime]
  int64_t rabTimeHeads, rabNumTime;
  const int32_t* rabKeyTime;   // [totalK] (BHND: batch maxSeqK)
  const int32_t* rabNextTime;  // as rabKeyTime
  const int32_t* rabThresholds;
  int64_t rabNumThresholds;  // 1..rabNumTime
  // Backward outputs (the tables' shapes), or null: dZ summed per column over the allowed pairs.
  float* rabDPos;
  float* rabDTime;
  // Set by the kernels, not the caller: rabThresholds' lookup table and its correction steps
  // (flash_hooks.h RabLut).
  const int32_t* rabLut;
  int32_t rabSteps;
  // Paged K/V (packages/attention/src/spec.ts AttentionOptions.paged; forward only): k and v
  // are page pools [numPages, pageSize, hkv, d|dv] (totalK = numPages * pageSize tokens) and key
  // j of sequence b is pool token blockTable[b * maxPages + j / pageSize] * pageSize +
  // j % pageSize (flash_common.h keyRowOf). Null blockTable = contiguous K/V (pageSize 0).
  const int32_t* blockTable;
  int64_t pageSize, maxPages;
};

// Permuted tiles (packages/skeleton/src/hooks.ts PermuteHook): row i of the tiled order of
// (b, h) is query permQ[lseBase(b, h) + i] of its sequence, key j of (b, kv head) is key
// permK[kvBase + j] (kvBase: (b * hkv + h) * maxSeqK, or h * totalK + startK[b] for THD).
// Every position rule sees the tiled positions i, j; rows are read and written through the
// index. Null = identity (the unpermuted code path). Each (b, h) slice is a permutation.
struct FlashForwardArgs {
  const int32_t* permQ;
  const int32_t* permK;
  const float* q;
  const float* k;
  const float* v;
  float* o;
  float* lse;  // softmax only (null for the pointwise sigmoid and silu)
};

struct FlashBackwardArgs {
  const int32_t* permQ;  // as FlashForwardArgs
  const int32_t* permK;
  const float* q;
  const float* k;
  const float* v;
  const float* o;    // softmax only
  const float* lse;  // softmax only
  const float* dO;
  float* dq;
  float* dk;
  float* dv;
  float* dsinks;  // softmax with sinks only: [hq], -sum over rows exp(sink - LSE_i) (dO_i . O_i)
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

// The op registry. An op is a name, a problem and named arrays (the descriptors in addon.cc);
// a call of it is one of the plain structs below, built by the N-API layer after validation.
// Each ISA translation unit registers the ops it has kernels for; the N-API layer picks the
// best ISA per op, so an op may exist for one ISA only (e.g. a later AVX-512 VNNI kernel).
constexpr const char* kOpAttentionForward = "attention.forward";
constexpr const char* kOpAttentionBackward = "attention.backward";
constexpr const char* kOpGemm = "gemm";
constexpr const char* kOpSageQuantize = "sage.quantize";
constexpr const char* kOpSageForward = "sage.forward";
constexpr const char* kOpGlaForward = "gla.forward";
constexpr const char* kOpGlaBackward = "gla.backward";

struct AttentionForwardCall {
  AttnProblem p;
  FlashForwardArgs a;
};
struct AttentionBackwardCall {
  AttnProblem p;
  FlashBackwardArgs a;
};
struct GemmCall {
  GemmArgs g;
};

// SageAttention2 (packages/sage-attention/ARITHMETIC.md, the contract; packages/skeleton/src/sage
// codec.ts the layouts): one (batch, head) has Nq query rows, Nk keys; BHND, contiguous.
enum class SageGranularity : int32_t { kBlock, kWarp, kThread };

struct SageDims {
  int64_t batch, hq, hkv, group, nq, nk, d, dv;
  SageGranularity granularity;
  int64_t nQG, nKG, nQB;  // scale groups of Q and K, 128-row Q blocks (per (b, head))
};

// sage.quantize: the pre-pass (smoothing, scales and codes). Inputs f32 [B, H, N, D]; qBits one
// per query head (4 or 8). Outputs in the codec's layout; vCodes / vScale with pvBits 8 only,
// bias with smoothQ only (null otherwise).
struct SageQuantizeCall {
  SageDims z;
  bool smoothK, smoothQ;
  int32_t pvBits;
  const float* q;
  const float* k;
  const float* v;
  const uint8_t* qBits;
  int8_t* qCodes;
  float* qScale;
  int8_t* kCodes;
  float* kScale;
  int8_t* vCodes;
  float* vScale;
  float* bias;
};

// sage.forward: the kernel on a codec. pvBits 8 reads vCodes / vScale (dV), 32 reads v (f32);
// bias null = no smoothQ term. left / right: the window with causal folded in, -1 = unbounded
// (KERNELS.md "Common"). threads: at most this many pool threads work on the call (0 = all).
struct SageForwardCall {
  SageDims z;
  int32_t pvBits;
  float scale;
  int64_t left, right;
  int64_t threads;
  const int8_t* qCodes;
  const float* qScale;
  const int8_t* kCodes;
  const float* kScale;
  const int8_t* vCodes;
  const float* vScale;
  const float* v;
  const float* bias;
  float* o;
  float* lse;  // null = not wanted
};

// Gated linear attention, chunk form (KERNELS.md "Gated linear attention"; the TS twin
// packages/linear-attention/src/gla/chunk.ts). Layout BTHK: q, k, gk [batch, t, h, k], v and o
// [batch, t, h, v]; states h0, ht, dht, dh0 [n, h, k, v]. n = batch sequences of t rows, or
// with cuSeqlens (batch 1) the n packed sequences [cuSeqlens[i], cuSeqlens[i + 1]). gk holds
// log-space gates, finite and <= 0 (checked by the N-API layer). chunk: a power of two in
// [16, 256] (the secondary-level sub-chunks are 16 rows).
struct GlaDims {
  int64_t batch, t, h, k, v, n;
  float scale;
  int64_t chunk;
  const int32_t* cuSeqlens;  // n + 1 offsets, or null
  // The recurrent form instead (fla's fused_recurrent_gla; chunk unused), each sequence last
  // token first with reverse.
  bool recurrent, reverse;
};

// gla.forward: o and, when ht is not null, the final states; h0 null = zero initial states.
struct GlaForwardCall {
  GlaDims z;
  const float* q;
  const float* k;
  const float* v;
  const float* gk;
  const float* h0;
  float* o;
  float* ht;
};

// gla.backward: dq, dk, dv, dgk and, when dh0 is not null, the initial states' gradient; dht
// null = no gradient from the final states.
struct GlaBackwardCall {
  GlaDims z;
  const float* q;
  const float* k;
  const float* v;
  const float* gk;
  const float* h0;
  const float* dO;
  const float* dht;
  float* dq;
  float* dk;
  float* dv;
  float* dgk;
  float* dh0;
};

// The nn ops (@attnkit/nn's native backend, packages/nn/src/kernels/native): dense f32 kernels
// whose problems are a few integers and numbers, so they share one call struct. The meaning
// of n[] and x[] per op is the field list of its descriptor in addon.cc (kNnSpecs), in order;
// the kernels are nn_ops.h.
constexpr int kNnInts = 40;
constexpr int kNnNums = 8;
constexpr int kNnArrays = 6;
// Most dims of nn.map's strided iteration (after merging, see packages/nn's collapseDims).
constexpr int kNnMaxRank = 8;

struct NnCall {
  int64_t n[kNnInts];
  double x[kNnNums];
  const float* in[kNnArrays];
  const int32_t* idx[kNnArrays];  // Int32Array inputs, by input position
  float* out[kNnArrays];
};

// nn.map op codes: y = a op b (add sub mul div), y = a (copy), y += a (sum, y zeroed first over
// its span), y = max(y, a) (max, y filled with -inf first; NaN wins), and max's backward
// (y = c where a == b at the first such element of each b position, else 0).
enum NnMapOp : int32_t { kMapAdd, kMapSub, kMapMul, kMapDiv, kMapCopy, kMapSum, kMapMax, kMapMaxBackward };
// nn.unary op codes (packages/nn UnaryOp order, then affine a x + b).
enum NnUnaryOp : int32_t { kUnExp, kUnLog, kUnRelu, kUnGelu, kUnSilu, kUnSigmoid, kUnTanh, kUnAffine };

constexpr const char* kOpNnMap = "nn.map";
constexpr const char* kOpNnUnary = "nn.unary";
constexpr const char* kOpNnSoftmax = "nn.softmax";
constexpr const char* kOpNnNorm = "nn.norm";
constexpr const char* kOpNnNormBackward = "nn.normBackward";
constexpr const char* kOpNnCrossEntropy = "nn.crossEntropy";
constexpr const char* kOpNnCrossEntropyBackward = "nn.crossEntropyBackward";
constexpr const char* kOpNnGather = "nn.gather";
constexpr const char* kOpNnScatterAdd = "nn.scatterAdd";
constexpr const char* kOpNnRope = "nn.rope";
constexpr const char* kOpNnMatmul = "nn.matmul";
constexpr const char* kOpNnAdamw = "nn.adamw";
constexpr const char* kOpNnSgd = "nn.sgd";
constexpr const char* kOpNnSumSquares = "nn.sumSquares";
constexpr const char* kOpNnDecodeHalf = "nn.decodeHalf";

struct OpKernel {
  const char* op;
  // Runs the call (a pointer to the op's call struct): nullptr on success or a static message
  // (out of memory).
  const char* (*run)(const void* call);
  // Floats the kernel allocates besides its arrays: per pool thread and once (shared); may be
  // null.
  void (*scratch)(const void* call, int64_t* perThread, int64_t* shared);
};

struct IsaKernels {
  const char* isa;
  const OpKernel* ops;
  int count;
};

const IsaKernels* kernelsScalar();
#if defined(ATTNKIT_X86)
const IsaKernels* kernelsAvx2();
const IsaKernels* kernelsAvx512();
// AVX-512 with VNNI (vpdpbusd): the int8 ops (SageAttention2) only; every other op falls back
// to the avx512 kernels.
const IsaKernels* kernelsAvx512Vnni();
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
