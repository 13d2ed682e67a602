// N-API surface of the engine: one generic entry point, run(op, problem, inputs, outputs, isa?)
// (a promise), checked against the op's descriptor (named inputs and outputs whose lengths
// follow from the problem; TypeError / RangeError naming the argument), and the registry of
// kernels per (op, ISA) with the best ISA this CPU has chosen per op.
// Arrays are used in place (zero-copy); a call holds references to them until it settles.
#include <napi.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine.h"
// The addon's own instance of the stream-K planner (the kernels have one per ISA namespace).
#define ATTNKIT_NS host
#include "stream_k.h"
#undef ATTNKIT_NS

namespace attnkit {
namespace {

// ---- ISAs and the kernel registry -------------------------------------------------------

struct Isa {
  const char* name;
  int rank;  // larger = preferred; forcing an ISA caps the choice at its rank
  const IsaKernels* kernels;
};

// The ISAs this CPU runs, best first.
std::vector<Isa> detectIsas() {
  std::vector<Isa> isas;
#if defined(ATTNKIT_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma")) {
    // VNNI (vpdpbusd) has kernels of the int8 ops only; the others run on avx512's.
    if (__builtin_cpu_supports("avx512vnni")) isas.push_back({"avx512vnni", 3, kernelsAvx512Vnni()});
    isas.push_back({"avx512", 2, kernelsAvx512()});
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    isas.push_back({"avx2", 1, kernelsAvx2()});
  }
#endif
  isas.push_back({"scalar", 0, kernelsScalar()});
  std::stable_sort(isas.begin(), isas.end(), [](const Isa& a, const Isa& b) { return a.rank > b.rank; });
  return isas;
}

const std::vector<Isa>& isas() {
  static const std::vector<Isa> v = detectIsas();
  return v;
}

struct Chosen {
  const Isa* isa;
  const OpKernel* kernel;
};

// The kernels of `op`, best ISA first.
std::vector<Chosen> kernelsOf(const std::string& op) {
  std::vector<Chosen> out;
  for (const Isa& isa : isas()) {
    for (int i = 0; i < isa.kernels->count; i++)
      if (op == isa.kernels->ops[i].op) out.push_back({&isa, &isa.kernels->ops[i]});
  }
  return out;
}

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsNumber()) return "number " + v.ToString().Utf8Value();
  if (v.IsString()) return "string \"" + v.As<Napi::String>().Utf8Value() + "\"";
  if (v.IsBoolean()) return v.ToBoolean().Value() ? "true" : "false";
  if (v.IsTypedArray()) {
    switch (v.As<Napi::TypedArray>().TypedArrayType()) {
      case napi_float32_array:
        return "Float32Array";
      case napi_float64_array:
        return "Float64Array";
      case napi_int32_array:
        return "Int32Array";
      case napi_uint8_array:
        return "Uint8Array";
      case napi_int8_array:
        return "Int8Array";
      default:
        return "another TypedArray";
    }
  }
  if (v.IsArray()) return "an Array";
  if (v.IsFunction()) return "a function";
  if (v.IsObject()) return "an object";
  return "a value of another type";
}

[[noreturn]] void typeError(Napi::Env env, const std::string& name, const std::string& expected,
                            const Napi::Value& got) {
  throw Napi::TypeError::New(env, name + ": expected " + expected + ", got " + describe(got));
}

[[noreturn]] void rangeError(Napi::Env env, const std::string& name, const std::string& expected,
                             const std::string& got) {
  throw Napi::RangeError::New(env, name + ": expected " + expected + ", got " + got);
}

int64_t intField(const Napi::Object& o, const char* prefix, const char* key, int64_t min,
                 int64_t max = INT64_C(1) << 40) {
  Napi::Env env = o.Env();
  const std::string name = std::string(prefix) + key;
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) typeError(env, name, "an integer", v);
  const double x = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(x) || std::floor(x) != x || x < static_cast<double>(min) ||
      x > static_cast<double>(max)) {
    rangeError(env, name,
               "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]",
               v.ToString().Utf8Value());
  }
  return static_cast<int64_t>(x);
}

template <typename T, napi_typedarray_type kType>
struct ArrayArg {
  T* data = nullptr;
  int64_t length = 0;
};

template <typename T, napi_typedarray_type kType>
ArrayArg<T, kType> arrayArg(const Napi::Value& v, const std::string& name, const char* typeName) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != kType) {
    typeError(v.Env(), name, std::string("a ") + typeName, v);
  }
  Napi::TypedArrayOf<T> a = v.As<Napi::TypedArrayOf<T>>();
  return {a.Data(), static_cast<int64_t>(a.ElementLength())};
}

using F32 = ArrayArg<float, napi_float32_array>;
F32 f32Arg(const Napi::Value& v, const std::string& name) {
  return arrayArg<float, napi_float32_array>(v, name, "Float32Array");
}

void expectLength(Napi::Env env, const std::string& name, int64_t got, int64_t want,
                  const std::string& why) {
  if (got != want) {
    rangeError(env, name, std::to_string(want) + " elements (" + why + ")",
               std::to_string(got) + " elements");
  }
}

// Holds the JS values an async call reads or writes, so they outlive the call.
class Keep {
 public:
  void add(const Napi::Value& v) {
    if (v.IsObject()) refs_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }

 private:
  std::vector<Napi::ObjectReference> refs_;
};

void checkFiniteArray(Napi::Env env, const char* name, const float* x, int64_t n) {
  // Blocks without an early exit, so the compiler vectorises the test (an exponent of all ones:
  // inf or NaN); the element is looked for only in a block that has one. The loop with a branch
  // per element took ~0.1 ms per MiB on the JS thread before every sage.forward (perf: 4.5% of a
  // call with a near-empty band, its 1 MiB smoothQ bias).
  constexpr int64_t kBlock = 1024;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = b + kBlock < n ? b + kBlock : n;
    uint32_t bad = 0;
    for (int64_t i = b; i < e; i++) {
      uint32_t bits;
      std::memcpy(&bits, x + i, 4);
      bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
    }
    if (bad == 0) continue;
    for (int64_t i = b; i < e; i++)
      if (!std::isfinite(x[i]))
        rangeError(env, std::string(name) + "[" + std::to_string(i) + "]", "a finite number",
                   std::to_string(x[i]));
  }
}

// A Float32Array of exactly `want` finite elements (the hooks' parameters).
const float* finiteF32(const Napi::Value& v, const std::string& name, int64_t want,
                       const std::string& why, Keep& keep) {
  F32 a = f32Arg(v, name);
  expectLength(v.Env(), name, a.length, want, why);
  checkFiniteArray(v.Env(), name.c_str(), a.data, a.length);
  keep.add(v);
  return a.data;
}

std::string kindOf(const Napi::Object& o, const std::string& name) {
  Napi::Value k = o.Get("kind");
  if (!k.IsString()) typeError(o.Env(), name + ".kind", "a string", k);
  return k.As<Napi::String>().Utf8Value();
}

// problem.normalize: undefined (softmax), { kind: 'softmax', sinks?: Float32Array [hq] },
// { kind: 'sigmoid', bias: Float32Array [batch] } or { kind: 'silu', factor: number }
// (packages/skeleton/src/hooks.ts).
void normalizeArg(const Napi::Value& v, AttnProblem& p, Keep& keep) {
  Napi::Env env = v.Env();
  p.normalize = Normalize::kSoftmax;
  if (v.IsUndefined()) return;
  const char* expected =
      "{ kind: 'softmax', sinks? }, { kind: 'sigmoid', bias } or { kind: 'silu', factor }";
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
    typeError(env, "problem.normalize", expected, v);
  Napi::Object o = v.As<Napi::Object>();
  const std::string kind = kindOf(o, "problem.normalize");
  if (kind == "softmax") {
    Napi::Value s = o.Get("sinks");
    if (!s.IsUndefined())
      p.sinks = finiteF32(s, "problem.normalize.sinks", p.hq, "one per query head", keep);
  } else if (kind == "sigmoid") {
    p.normalize = Normalize::kSigmoid;
    p.sigmoidBias =
        finiteF32(o.Get("bias"), "problem.normalize.bias", p.batch, "one per batch entry", keep);
  } else if (kind == "silu") {
    p.normalize = Normalize::kSilu;
    Napi::Value f = o.Get("factor");
    if (!f.IsNumber()) typeError(env, "problem.normalize.factor", "a finite number", f);
    const double c = f.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(c) || !std::isfinite(static_cast<float>(c)))
      rangeError(env, "problem.normalize.factor", "a finite number", f.ToString().Utf8Value());
    p.siluFactor = static_cast<float>(c);
  } else {
    rangeError(env, "problem.normalize.kind", "\"softmax\", \"sigmoid\" or \"silu\"",
               "\"" + kind + "\"");
  }
}

// problem.scoreMods: undefined or up to kMaxScoreMods built-in mods, applied in order
// (packages/attention/src/mods.ts ResolvedScoreMod, the bias as a Float32Array).
void scoreModsArg(const Napi::Value& v, AttnProblem& p, Keep& keep) {
  Napi::Env env = v.Env();
  p.numMods = 0;
  if (v.IsUndefined()) return;
  if (!v.IsArray()) typeError(env, "problem.scoreMods", "an Array of score mods", v);
  Napi::Array list = v.As<Napi::Array>();
  if (list.Length() > static_cast<uint32_t>(kMaxScoreMods))
    rangeError(env, "problem.scoreMods", "at most " + std::to_string(kMaxScoreMods) + " mods",
               std::to_string(list.Length()) + " mods");
  for (uint32_t n = 0; n < list.Length(); n++) {
    const std::string name = "problem.scoreMods[" + std::to_string(n) + "]";
    Napi::Value mv = list.Get(n);
    if (!mv.IsObject() || mv.IsArray() || mv.IsTypedArray())
      typeError(env, name, "a score mod object", mv);
    Napi::Object m = mv.As<Napi::Object>();
    ScoreMod mod{};
    const std::string kind = kindOf(m, name);
    if (kind == "softcap") {
      mod.kind = ScoreModKind::kSoftcap;
      Napi::Value c = m.Get("cap");
      if (!c.IsNumber()) typeError(env, name + ".cap", "a finite number > 0", c);
      const double cap = c.As<Napi::Number>().DoubleValue();
      if (!std::isfinite(cap) || !(cap > 0) || !std::isfinite(static_cast<float>(cap)))
        rangeError(env, name + ".cap", "a finite number > 0", c.ToString().Utf8Value());
      mod.cap = static_cast<float>(cap);
    } else if (kind == "alibi") {
      mod.kind = ScoreModKind::kAlibi;
      mod.slopes = finiteF32(m.Get("slopes"), name + ".slopes", p.hq, "one per query head", keep);
    } else if (kind == "bias") {
      mod.kind = ScoreModKind::kBias;
      const std::string prefix = name + ".";
      mod.batchStride = intField(m, prefix.c_str(), "batchStride", 0);
      mod.headStride = intField(m, prefix.c_str(), "headStride", 0);
      mod.rowStride = intField(m, prefix.c_str(), "rowStride", 0);
      Napi::Value bv = m.Get("bias");
      F32 bias = f32Arg(bv, name + ".bias");
      keep.add(bv);
      // The element of the last (b, h, i, j) any sequence reads.
      const int64_t need = p.batch == 0 || p.maxSeqQ == 0 || p.maxSeqK == 0
                               ? 0
                               : (p.batch - 1) * mod.batchStride + (p.hq - 1) * mod.headStride +
                                     (p.maxSeqQ - 1) * mod.rowStride + p.maxSeqK;
      if (bias.length < need)
        rangeError(env, name + ".bias",
                   "at least " + std::to_string(need) + " elements (from the strides, maxSeqQ "
                   "and maxSeqK)",
                   std::to_string(bias.length) + " elements");
      mod.bias = bias.data;
      // Optional output of the backward (a bias with grad): its own strides, the same rows.
      Napi::Value dv = m.Get("dbias");
      if (!dv.IsUndefined()) {
        F32 dbias = f32Arg(dv, name + ".dbias");
        keep.add(dv);
        mod.dbBatchStride = intField(m, prefix.c_str(), "dbiasBatchStride", 0);
        mod.dbHeadStride = intField(m, prefix.c_str(), "dbiasHeadStride", 0);
        const int64_t dneed = p.batch == 0 || p.maxSeqQ == 0 || p.maxSeqK == 0
                                  ? 0
                                  : (p.batch - 1) * mod.dbBatchStride +
                                        (p.hq - 1) * mod.dbHeadStride +
                                        (p.maxSeqQ - 1) * mod.rowStride + p.maxSeqK;
        if (dbias.length < dneed)
          rangeError(env, name + ".dbias",
                     "at least " + std::to_string(dneed) + " elements (from the dbias strides)",
                     std::to_string(dbias.length) + " elements");
        mod.dbias = dbias.data;
      }
    } else {
      rangeError(env, name + ".kind",
                 "\"softcap\", \"alibi\" or \"bias\" (the native engine runs the built-in score "
                 "mods only; custom mods run on ts and webgpu)",
                 "\"" + kind + "\"");
    }
    p.mods[p.numMods++] = mod;
  }
}

// problem.hstuMask: undefined, or { numTargets: Int32Array [batch] (each in [0, seqK[b]], with
// seqQ <= seqK: query row i is position i + seqK - seqQ), contextual, maxAttnLen, minFull (non-negative integers), causal (boolean) }:
// packages/skeleton/src/hooks.ts HstuMaskHook.
void hstuMaskArg(const Napi::Value& v, AttnProblem& p, Keep& keep) {
  Napi::Env env = v.Env();
  p.hstuTargets = nullptr;
  if (v.IsUndefined() || v.IsNull()) return;
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
    typeError(env, "problem.hstuMask",
              "{ numTargets, contextual, maxAttnLen, minFull, causal } or undefined", v);
  Napi::Object o = v.As<Napi::Object>();
  const char* H = "problem.hstuMask.";
  Napi::Value nt = o.Get("numTargets");
  auto arr = arrayArg<int32_t, napi_int32_array>(nt, "problem.hstuMask.numTargets", "Int32Array");
  keep.add(nt);
  expectLength(env, "problem.hstuMask.numTargets", arr.length, p.batch, "one per batch entry");
  for (int64_t b = 0; b < p.batch; b++) {
    // Queries are the sequence's last seqQ[b] tokens (M-FALCON's candidates when fewer).
    if (p.seqQ[b] > p.seqK[b])
      rangeError(env, "problem.seqQ[" + std::to_string(b) + "]",
                 "at most seqK = " + std::to_string(p.seqK[b]) +
                     " (HSTU's queries are the sequence's last tokens)",
                 std::to_string(p.seqQ[b]));
    if (arr.data[b] < 0 || arr.data[b] > p.seqK[b])
      rangeError(env, "problem.hstuMask.numTargets[" + std::to_string(b) + "]",
                 "an integer in [0, seqK = " + std::to_string(p.seqK[b]) + "]",
                 std::to_string(arr.data[b]));
  }
  p.hstuContextual = intField(o, H, "contextual", 0, INT64_C(1) << 31);
  p.hstuMaxAttnLen = intField(o, H, "maxAttnLen", 0, INT64_C(1) << 31);
  p.hstuMinFull = intField(o, H, "minFull", 0, INT64_C(1) << 31);
  Napi::Value c = o.Get("causal");
  if (!c.IsBoolean()) typeError(env, "problem.hstuMask.causal", "a boolean", c);
  p.hstuCausal = c.As<Napi::Boolean>().Value();
  p.hstuTargets = arr.data;
}

// problem.hstuRab: undefined, or HSTU's bucketed rab (packages/skeleton/src/hstu-rab.ts
// HstuRabHook; engine.h AttnProblem.rabPos...): { posTable?: Float32Array [posHeads, numPos]
// (numPos odd), posHeads, numPos, timeTable?: Float32Array [timeHeads, numTime], timeHeads,
// numTime, keyTime, nextTime: Int32Array (one per token of the key axis, >= 0), thresholds:
// Int32Array (1..numTime entries, thresholds[0] = 0, non-decreasing) }, at least one table;
// heads 1 (shared) or hq. Table values are data (not checked, as a bias's: NaN propagates).
void hstuRabArg(const Napi::Value& v, AttnProblem& p, Keep& keep) {
  Napi::Env env = v.Env();
  p.rabPos = p.rabTime = nullptr;
  p.rabKeyTime = p.rabNextTime = p.rabThresholds = nullptr;
  p.rabDPos = p.rabDTime = nullptr;
  p.rabLut = nullptr;
  if (v.IsUndefined() || v.IsNull()) return;
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
    typeError(env, "problem.hstuRab",
              "{ posTable?, posHeads, numPos, timeTable?, timeHeads, numTime, keyTime, nextTime, "
              "thresholds } or undefined",
              v);
  Napi::Object o = v.As<Napi::Object>();
  const char* H = "problem.hstuRab.";
  for (int64_t b = 0; b < p.batch; b++) {
    // Query row r is position r + seqK - seqQ (the sequence's last seqQ tokens).
    if (p.seqQ[b] > p.seqK[b])
      rangeError(env, "problem.seqQ[" + std::to_string(b) + "]",
                 "at most seqK = " + std::to_string(p.seqK[b]) +
                     " (HSTU's queries are the sequence's last tokens)",
                 std::to_string(p.seqQ[b]));
  }
  // heads: 1 (a table shared by all heads) or hq.
  auto heads = [&](const char* key) {
    const int64_t h = intField(o, H, key, 1, p.hq);
    if (h != 1 && h != p.hq)
      rangeError(env, std::string(H) + key, "1 (shared) or hq = " + std::to_string(p.hq),
                 std::to_string(h));
    return h;
  };
  auto table = [&](const char* key, int64_t rows, int64_t cols) {
    Napi::Value t = o.Get(key);
    F32 a = f32Arg(t, std::string(H) + key);
    keep.add(t);
    expectLength(env, std::string(H) + key, a.length, rows * cols,
                 std::to_string(rows) + " heads x " + std::to_string(cols) + " columns");
    return a.data;
  };
  Napi::Value pt = o.Get("posTable");
  if (!pt.IsUndefined()) {
    p.rabPosHeads = heads("posHeads");
    p.rabNumPos = intField(o, H, "numPos", 1, INT64_C(1) << 31);
    if (p.rabNumPos % 2 == 0)
      rangeError(env, std::string(H) + "numPos", "an odd integer (column (numPos - 1) / 2 is j = i)",
                 std::to_string(p.rabNumPos));
    p.rabPos = table("posTable", p.rabPosHeads, p.rabNumPos);
  }
  Napi::Value tt = o.Get("timeTable");
  if (!tt.IsUndefined()) {
    p.rabTimeHeads = heads("timeHeads");
    p.rabNumTime = intField(o, H, "numTime", 1, INT64_C(1) << 31);
    const int64_t keys = p.thd ? p.totalK : p.batch * p.maxSeqK;
    const char* why = p.thd ? "one per key token: totalK" : "one per key row: batch x maxSeqK";
    const int32_t* times[2];
    const char* names[2] = {"keyTime", "nextTime"};
    for (int n = 0; n < 2; n++) {
      const std::string name = std::string(H) + names[n];
      Napi::Value x = o.Get(names[n]);
      auto arr = arrayArg<int32_t, napi_int32_array>(x, name, "Int32Array");
      keep.add(x);
      expectLength(env, name, arr.length, keys, why);
      for (int64_t t = 0; t < arr.length; t++)
        if (arr.data[t] < 0)
          rangeError(env, name + "[" + std::to_string(t) + "]",
                     "a time >= 0 (rebased per sequence: hstuRabTimes)",
                     std::to_string(arr.data[t]));
      times[n] = arr.data;
    }
    const std::string tn = std::string(H) + "thresholds";
    Napi::Value th = o.Get("thresholds");
    auto thr = arrayArg<int32_t, napi_int32_array>(th, tn, "Int32Array");
    keep.add(th);
    if (thr.length < 1 || thr.length > p.rabNumTime)
      rangeError(env, tn, "1 to numTime = " + std::to_string(p.rabNumTime) + " entries",
                 std::to_string(thr.length) + " entries");
    if (thr.data[0] != 0) rangeError(env, tn + "[0]", "0", std::to_string(thr.data[0]));
    for (int64_t t = 1; t < thr.length; t++)
      if (thr.data[t] < thr.data[t - 1])
        rangeError(env, tn + "[" + std::to_string(t) + "]",
                   "at least thresholds[" + std::to_string(t - 1) +
                       "] = " + std::to_string(thr.data[t - 1]) + " (non-decreasing)",
                   std::to_string(thr.data[t]));
    p.rabTime = table("timeTable", p.rabTimeHeads, p.rabNumTime);
    p.rabKeyTime = times[0];
    p.rabNextTime = times[1];
    p.rabThresholds = thr.data;
    p.rabNumThresholds = thr.length;
  }
  if (p.rabPos == nullptr && p.rabTime == nullptr)
    rangeError(env, "problem.hstuRab", "posTable or timeTable (at least one table)",
               "neither");
}

// problem.paged: undefined (contiguous K/V) or { pageSize, maxPages, blockTable } (engine.h
// AttnProblem.blockTable). Every page slot a sequence's length needs must name a pool page:
// the pool holds totalK / pageSize pages. BHND only, no permuted keys or rab with it.
void pagedArg(const Napi::Value& v, AttnProblem& p, Keep& keep) {
  if (v.IsUndefined() || v.IsNull()) return;
  Napi::Env env = v.Env();
  if (!v.IsObject()) typeError(env, "problem.paged", "an object or undefined", v);
  Napi::Object o = v.As<Napi::Object>();
  const char* P = "problem.paged.";
  p.pageSize = intField(o, P, "pageSize", 1);
  p.maxPages = intField(o, P, "maxPages", 0);
  if (p.thd) rangeError(env, "problem.paged", "layout BHND (q [B, Hq, Nq, D])", "layout THD");
  if (p.rabPos != nullptr || p.rabTime != nullptr)
    rangeError(env, "problem.paged", "no problem.hstuRab with it", "both");
  if (p.totalK % p.pageSize != 0)
    rangeError(env, "problem.totalK", "a multiple of paged.pageSize (the pool's tokens)",
               std::to_string(p.totalK));
  const int64_t numPages = p.totalK / p.pageSize;
  Napi::Value tv = o.Get("blockTable");
  auto table = arrayArg<int32_t, napi_int32_array>(tv, "problem.paged.blockTable", "Int32Array");
  keep.add(tv);
  expectLength(env, "problem.paged.blockTable", table.length, p.batch * p.maxPages,
               "batch x maxPages");
  for (int64_t b = 0; b < p.batch; b++) {
    if (p.seqK[b] > p.maxPages * p.pageSize)
      rangeError(env, "problem.seqK[" + std::to_string(b) + "]",
                 "<= maxPages x pageSize = " + std::to_string(p.maxPages * p.pageSize),
                 std::to_string(p.seqK[b]));
    for (int64_t slot = 0; slot * p.pageSize < p.seqK[b]; slot++) {
      const int32_t page = table.data[b * p.maxPages + slot];
      if (page < 0 || page >= numPages)
        rangeError(env, "problem.paged.blockTable",
                   "pages in [0, " + std::to_string(numPages) + ") for every slot a length needs",
                   std::to_string(page) + " at batch " + std::to_string(b) + ", slot " +
                       std::to_string(slot));
    }
  }
  p.blockTable = table.data;
}

AttnProblem problemArg(const Napi::Value& value, Keep& keep) {
  Napi::Env env = value.Env();
  if (!value.IsObject() || value.IsArray() || value.IsTypedArray())
    typeError(env, "problem", "an object (NativeAttentionProblem)", value);
  Napi::Object o = value.As<Napi::Object>();
  keep.add(o);
  AttnProblem p{};
  Napi::Value layout = o.Get("layout");
  if (!layout.IsString()) typeError(env, "problem.layout", "\"BHND\" or \"THD\"", layout);
  const std::string l = layout.As<Napi::String>().Utf8Value();
  if (l != "BHND" && l != "THD") rangeError(env, "problem.layout", "\"BHND\" or \"THD\"", l);
  p.thd = l == "THD";
  const char* P = "problem.";
  p.batch = intField(o, P, "batch", 0);
  p.hq = intField(o, P, "hq", 1);
  p.hkv = intField(o, P, "hkv", 1);
  if (p.hq % p.hkv != 0)
    rangeError(env, "problem.hkv", "a divisor of hq = " + std::to_string(p.hq),
               std::to_string(p.hkv));
  p.group = p.hq / p.hkv;
  p.d = intField(o, P, "d", 1, 1 << 16);
  p.dv = intField(o, P, "dv", 1, 1 << 16);
  Napi::Value scale = o.Get("scale");
  if (!scale.IsNumber()) typeError(env, "problem.scale", "a finite number", scale);
  const double s = scale.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(s)) rangeError(env, "problem.scale", "a finite number", std::to_string(s));
  p.scale = static_cast<float>(s);
  p.left = intField(o, P, "left", -1);
  p.right = intField(o, P, "right", -1);
  p.maxSeqQ = intField(o, P, "maxSeqQ", 0);
  p.maxSeqK = intField(o, P, "maxSeqK", 0);
  p.totalQ = intField(o, P, "totalQ", 0);
  p.totalK = intField(o, P, "totalK", 0);

  const char* seqNames[4] = {"seqQ", "seqK", "startQ", "startK"};
  const int32_t* seqPtrs[4];
  for (int i = 0; i < 4; i++) {
    const std::string name = std::string(P) + seqNames[i];
    Napi::Value v = o.Get(seqNames[i]);
    auto arr = arrayArg<int32_t, napi_int32_array>(v, name, "Int32Array");
    keep.add(v);
    expectLength(env, name, arr.length, p.batch, "one per batch entry");
    for (int64_t b = 0; b < p.batch; b++)
      if (arr.data[b] < 0) rangeError(env, name, "entries >= 0", std::to_string(arr.data[b]));
    seqPtrs[i] = arr.data;
  }
  p.seqQ = seqPtrs[0];
  p.seqK = seqPtrs[1];
  p.startQ = seqPtrs[2];
  p.startK = seqPtrs[3];
  for (int64_t b = 0; b < p.batch; b++) {
    const std::string at = "[" + std::to_string(b) + "]";
    if (p.seqQ[b] > p.maxSeqQ)
      rangeError(env, "problem.seqQ" + at, "<= maxSeqQ = " + std::to_string(p.maxSeqQ),
                 std::to_string(p.seqQ[b]));
    if (p.seqK[b] > p.maxSeqK)
      rangeError(env, "problem.seqK" + at, "<= maxSeqK = " + std::to_string(p.maxSeqK),
                 std::to_string(p.seqK[b]));
    if (p.thd) {
      if (static_cast<int64_t>(p.startQ[b]) + p.seqQ[b] > p.totalQ)
        rangeError(env, "problem.startQ" + at, "startQ + seqQ <= totalQ = " + std::to_string(p.totalQ),
                   std::to_string(p.startQ[b]));
      if (static_cast<int64_t>(p.startK[b]) + p.seqK[b] > p.totalK)
        rangeError(env, "problem.startK" + at, "startK + seqK <= totalK = " + std::to_string(p.totalK),
                   std::to_string(p.startK[b]));
    }
  }

  Napi::Value bsv = o.Get("blockSparse");
  if (!bsv.IsUndefined() && !bsv.IsNull()) {
    if (!bsv.IsObject()) typeError(env, "problem.blockSparse", "an object or undefined", bsv);
    Napi::Object bs = bsv.As<Napi::Object>();
    const char* B = "problem.blockSparse.";
    p.bsBlockQ = intField(bs, B, "blockQ", 1);
    p.bsBlockK = intField(bs, B, "blockK", 1);
    p.bsNbq = intField(bs, B, "nbq", (p.maxSeqQ + p.bsBlockQ - 1) / p.bsBlockQ);
    p.bsNbk = intField(bs, B, "nbk", (p.maxSeqK + p.bsBlockK - 1) / p.bsBlockK);
    p.bsBatchStride = intField(bs, B, "batchStride", 0);
    p.bsHeadStride = intField(bs, B, "headStride", 0);
    Napi::Value mv = bs.Get("mask");
    auto mask = arrayArg<uint8_t, napi_uint8_array>(mv, "problem.blockSparse.mask", "Uint8Array");
    keep.add(mv);
    const int64_t need = p.batch == 0 ? 0
                                      : (p.batch - 1) * p.bsBatchStride +
                                            (p.hq - 1) * p.bsHeadStride + p.bsNbq * p.bsNbk;
    if (mask.length < need)
      rangeError(env, "problem.blockSparse.mask",
                 "at least " + std::to_string(need) + " elements (from nbq, nbk and the strides)",
                 std::to_string(mask.length) + " elements");
    p.bsMask = mask.data;
  }
  Napi::Value tq = o.Get("blockQ");
  p.tileQ = tq.IsUndefined() ? 0 : intField(o, P, "blockQ", 1, 1024);
  Napi::Value tk = o.Get("blockK");
  p.tileK = tk.IsUndefined() ? 0 : intField(o, P, "blockK", 1, 1024);
  Napi::Value mm = o.Get("maskMod");
  if (!mm.IsUndefined() && !mm.IsNull())
    rangeError(env, "problem.maskMod",
               "undefined (the native engine runs no user mask mods: they are TS / WGSL "
               "functions)",
               describe(mm));
  normalizeArg(o.Get("normalize"), p, keep);
  scoreModsArg(o.Get("scoreMods"), p, keep);
  hstuMaskArg(o.Get("hstuMask"), p, keep);
  hstuRabArg(o.Get("hstuRab"), p, keep);
  pagedArg(o.Get("paged"), p, keep);
  return p;
}

struct Sizes {
  int64_t q, k, v, o, lse, kIdx;  // kIdx: entries of the key index layout (permK)
};

Sizes sizesOf(const AttnProblem& p) {
  const int64_t rowsQ = p.thd ? p.totalQ * p.hq : p.batch * p.hq * p.maxSeqQ;
  const int64_t rowsK =
      p.thd || p.blockTable != nullptr ? p.totalK * p.hkv : p.batch * p.hkv * p.maxSeqK;
  return {rowsQ * p.d, rowsK * p.d, rowsK * p.dv, rowsQ * p.dv, rowsQ, rowsK};
}



// ---- Op descriptors ---------------------------------------------------------------------

// Whether a named array of an op is needed for a given problem (kOptional: may be omitted).
enum class Presence { kRequired, kAbsent, kOptional };

// The element type of a named array.
enum class ArgType {
  kF32,    // Float32Array
  kIndex,  // Int32Array (a row permutation)
  kI8,     // Int8Array (int8 codes)
  kU8,     // Uint8Array (small per-head integers)
};

struct ArgSpec {
  const char* name;
  ArgType type = ArgType::kF32;
};

// A call being validated: the op's call struct (engine.h) and what its arrays must be.
class Call {
 public:
  virtual ~Call() = default;
  virtual Presence presence(bool output, size_t i) const = 0;
  // Why an array is absent (for the error when one is given anyway).
  virtual const char* absentWhy(bool, size_t) const { return "not used by this problem"; }
  virtual int64_t length(bool output, size_t i) const = 0;
  virtual const char* lengthWhy(bool output, size_t i) const = 0;
  // Whether the length is a minimum (a strided matrix) rather than exact.
  virtual bool atLeast(bool, size_t) const { return false; }
  virtual void bind(bool output, size_t i, float* data) = 0;
  // Binds an Int32Array argument (ArgType::kIndex).
  virtual void bindIndex(size_t, const int32_t*) {}
  // Binds an Int8Array or Uint8Array argument (ArgType::kI8, kU8).
  virtual void bindBytes(bool, size_t, void*) {}
  virtual const void* data() const = 0;
  // Checks the values of the bound arrays where the kernel needs more than their lengths.
  virtual void check(Napi::Env) const {}
};

struct OpDesc {
  const char* name;
  std::vector<ArgSpec> inputs, outputs;
  std::unique_ptr<Call> (*parse)(const Napi::Value& problem, Keep& keep);
};

// Sigmoid and silu: no LSE, and the backward reads no forward output.
bool pointwise(const AttnProblem& p) {
  return p.normalize == Normalize::kSigmoid || p.normalize == Normalize::kSilu;
}

bool hasRab(const AttnProblem& p) { return p.rabPos != nullptr || p.rabTime != nullptr; }
constexpr const char* kRabNoPermutation =
    "problem.hstuRab reads the sequence order's positions: no permuted tiles with it";

// The most stream-K workers: the plan holds O(workers) offsets, and more workers than key tiles
// only adds idle ones.
constexpr int64_t kMaxStreamKWorkers = INT64_C(1) << 24;

// problem.streamK: undefined (off, 0) or { workers } (stream-K, LeanAttention; engine.h
// AttnProblem.streamKWorkers).
int64_t streamKField(const Napi::Object& o) {
  Napi::Value v = o.Get("streamK");
  if (v.IsUndefined()) return 0;
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
    typeError(o.Env(), "problem.streamK", "undefined or { workers }", v);
  return intField(v.As<Napi::Object>(), "problem.streamK.", "workers", 1, kMaxStreamKWorkers);
}

// attention.forward: inputs q, k, v; outputs o and (softmax) lse.
class AttentionForward : public Call {
 public:
  explicit AttentionForward(const AttnProblem& p) : z_(sizesOf(p)) { c_.p = p; }
  Presence presence(bool output, size_t i) const override {
    if (!output && i >= 3) return hasRab(c_.p) ? Presence::kAbsent : Presence::kOptional;
    const bool lse = output && i == 1;
    return lse && pointwise(c_.p) ? Presence::kAbsent : Presence::kRequired;
  }
  const char* absentWhy(bool output, size_t) const override {
    if (!output) return kRabNoPermutation;
    return c_.p.normalize == Normalize::kSilu ? "silu attention has no LSE"
                                              : "sigmoid attention has no LSE";
  }
  int64_t length(bool output, size_t i) const override {
    if (output) return i == 0 ? z_.o : z_.lse;
    const int64_t n[5] = {z_.q, z_.k, z_.v, z_.lse, z_.kIdx};
    return n[i];
  }
  const char* lengthWhy(bool output, size_t i) const override {
    if (output) return i == 0 ? "query rows x dv" : "one per query row and head";
    const char* w[5] = {"query rows x d", "key rows x d", "key rows x dv",
                        "one per query row and head (the LSE layout)",
                        "one per key row and kv head"};
    return w[i];
  }
  void bindIndex(size_t i, const int32_t* x) override {
    (i == 3 ? c_.a.permQ : c_.a.permK) = x;
  }
  void bind(bool output, size_t i, float* x) override {
    if (output) {
      (i == 0 ? c_.a.o : c_.a.lse) = x;
    } else {
      (i == 0 ? c_.a.q : i == 1 ? c_.a.k : c_.a.v) = x;
    }
  }
  const void* data() const override { return &c_; }
  // problem.splits: the forward's schedule, 1 (default) = band, > 1 = split-K (FlashDecoding).
  static std::unique_ptr<Call> parse(const Napi::Value& v, Keep& keep) {
    AttnProblem p = problemArg(v, keep);
    Napi::Object o = v.As<Napi::Object>();
    p.splits = o.Get("splits").IsUndefined() ? 1 : intField(o, "problem.", "splits", 1, 1 << 16);
    p.streamKWorkers = streamKField(o);
    if (p.streamKWorkers > 0 && p.splits > 1)
      rangeError(o.Env(), "problem.streamK", "no problem.splits > 1 with it (two partitions of the same key tiles; pick one)",
                 "problem.splits " + std::to_string(p.splits));
    return std::make_unique<AttentionForward>(p);
  }

 private:
  AttentionForwardCall c_{};
  Sizes z_;
};

// attention.backward: inputs q, k, v, o, lse (softmax), dO; outputs dq, dk, dv and (sinks)
// dsinks.
class AttentionBackward : public Call {
 public:
  explicit AttentionBackward(const AttnProblem& p) : z_(sizesOf(p)) { c_.p = p; }
  Presence presence(bool output, size_t i) const override {
    if (!output && (i == 3 || i == 4)) return pointwise(c_.p) ? Presence::kAbsent : Presence::kRequired;
    if (output && i == 3) return c_.p.sinks != nullptr ? Presence::kRequired : Presence::kAbsent;
    // The rab's table gradients: optional with the table (absent: none computed).
    if (output && i == 4) return c_.p.rabPos != nullptr ? Presence::kOptional : Presence::kAbsent;
    if (output && i == 5) return c_.p.rabTime != nullptr ? Presence::kOptional : Presence::kAbsent;
    if (!output && i >= 6) return hasRab(c_.p) ? Presence::kAbsent : Presence::kOptional;
    return Presence::kRequired;
  }
  const char* absentWhy(bool output, size_t i) const override {
    if (output && i == 4) return "the problem has no hstuRab.posTable";
    if (output && i == 5) return "the problem has no hstuRab.timeTable";
    if (output) return "the problem has no sinks";
    if (i >= 6) return kRabNoPermutation;
    return c_.p.normalize == Normalize::kSilu
               ? "silu's backward reads no forward output (dS = dP dw/ds)"
               : "sigmoid's backward reads no forward output (dS = dP w (1 - w))";
  }
  int64_t length(bool output, size_t i) const override {
    if (output) {
      const int64_t n[6] = {z_.q, z_.k, z_.v, c_.p.hq, c_.p.rabPosHeads * c_.p.rabNumPos,
                            c_.p.rabTimeHeads * c_.p.rabNumTime};
      return n[i];
    }
    const int64_t n[8] = {z_.q, z_.k, z_.v, z_.o, z_.lse, z_.o, z_.lse, z_.kIdx};
    return n[i];
  }
  const char* lengthWhy(bool output, size_t i) const override {
    if (output) {
      const char* w[6] = {"query rows x d", "key rows x d", "key rows x dv", "one per query head",
                          "hstuRab.posHeads x numPos", "hstuRab.timeHeads x numTime"};
      return w[i];
    }
    const char* w[8] = {"query rows x d",
                        "key rows x d",
                        "key rows x dv",
                        "query rows x dv",
                        "one per query row and head",
                        "query rows x dv",
                        "one per query row and head (the LSE layout)",
                        "one per key row and kv head"};
    return w[i];
  }
  void bindIndex(size_t i, const int32_t* x) override {
    (i == 6 ? c_.a.permQ : c_.a.permK) = x;
  }
  void bind(bool output, size_t i, float* x) override {
    FlashBackwardArgs& a = c_.a;
    if (output) {
      float** w[6] = {&a.dq, &a.dk, &a.dv, &a.dsinks, &c_.p.rabDPos, &c_.p.rabDTime};
      *w[i] = x;
    } else {
      const float** r[6] = {&a.q, &a.k, &a.v, &a.o, &a.lse, &a.dO};
      *r[i] = x;
    }
  }
  const void* data() const override { return &c_; }
  static std::unique_ptr<Call> parse(const Napi::Value& v, Keep& keep) {
    AttnProblem p = problemArg(v, keep);
    if (p.blockTable != nullptr)
      rangeError(v.Env(), "problem.paged", "undefined in attention.backward (paged K/V is forward only)",
                 "a block table");
    return std::make_unique<AttentionBackward>(p);
  }

 private:
  AttentionBackwardCall c_{};
  Sizes z_;
};

// Elements a row-major rows x cols matrix with leading dimension ld spans.
int64_t span(int64_t rows, int64_t cols, int64_t ld) {
  return rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
}

// gemm: problem { m, n, k, transA?, transB?, alpha? (1), beta? (0), lda?, ldb?, ldc? };
// inputs a, b; output c (read too when beta != 0).
class Gemm : public Call {
 public:
  explicit Gemm(const GemmArgs& g) { c_.g = g; }
  Presence presence(bool, size_t) const override { return Presence::kRequired; }
  int64_t length(bool output, size_t i) const override {
    const GemmArgs& g = c_.g;
    if (output) return span(g.m, g.n, g.ldc);
    if (i == 0) return g.transA ? span(g.k, g.m, g.lda) : span(g.m, g.k, g.lda);
    return g.transB ? span(g.n, g.k, g.ldb) : span(g.k, g.n, g.ldb);
  }
  const char* lengthWhy(bool, size_t) const override { return "rows, cols and ld"; }
  bool atLeast(bool, size_t) const override { return true; }
  void bind(bool output, size_t i, float* x) override {
    if (output)
      c_.g.c = x;
    else
      (i == 0 ? c_.g.a : c_.g.b) = x;
  }
  const void* data() const override { return &c_; }

  static std::unique_ptr<Call> parse(const Napi::Value& v, Keep& keep) {
    Napi::Env env = v.Env();
    if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
      typeError(env, "problem", "an object (NativeGemmProblem)", v);
    Napi::Object o = v.As<Napi::Object>();
    keep.add(o);
    GemmArgs g{};
    auto flag = [&](const char* key) {
      Napi::Value x = o.Get(key);
      if (x.IsUndefined()) return false;
      if (!x.IsBoolean()) typeError(env, std::string("problem.") + key, "a boolean", x);
      return x.As<Napi::Boolean>().Value();
    };
    auto number = [&](const char* key, float fallback) {
      Napi::Value x = o.Get(key);
      if (x.IsUndefined()) return fallback;
      if (!x.IsNumber()) typeError(env, std::string("problem.") + key, "a number", x);
      const double d = x.As<Napi::Number>().DoubleValue();
      if (!std::isfinite(d))
        rangeError(env, std::string("problem.") + key, "a finite number", std::to_string(d));
      return static_cast<float>(d);
    };
    auto ld = [&](const char* key, int64_t min) {
      return o.Get(key).IsUndefined() ? min : intField(o, "problem.", key, min);
    };
    g.transA = flag("transA");
    g.transB = flag("transB");
    g.m = intField(o, "problem.", "m", 0);
    g.n = intField(o, "problem.", "n", 0);
    g.k = intField(o, "problem.", "k", 0);
    g.alpha = number("alpha", 1.0f);
    g.beta = number("beta", 0.0f);
    const int64_t aCols = g.transA ? g.m : g.k, bCols = g.transB ? g.k : g.n;
    g.lda = ld("lda", aCols > 1 ? aCols : 1);
    g.ldb = ld("ldb", bCols > 1 ? bCols : 1);
    g.ldc = ld("ldc", g.n > 1 ? g.n : 1);
    return std::make_unique<Gemm>(g);
  }

 private:
  GemmCall c_{};
};

// ---- SageAttention2 (packages/sage-attention/ARITHMETIC.md; codec layouts:
// packages/skeleton/src/sage/codec.ts) -----------------------------------------------------

bool boolField(const Napi::Object& o, const char* key) {
  Napi::Value x = o.Get(key);
  if (!x.IsBoolean()) typeError(o.Env(), std::string("problem.") + key, "a boolean", x);
  return x.As<Napi::Boolean>().Value();
}

// problem { batch, hq, hkv, nq, nk, d, dv, granularity: 'block' | 'warp' | 'thread' }: D and Dv
// multiples of 16 in [16, 256] (the int32 score of a pair and a tile's P V sum are then exact
// in f32); the group counts of codec.ts sageGroupCounts.
SageDims sageDimsArg(const Napi::Object& o) {
  Napi::Env env = o.Env();
  const char* P = "problem.";
  SageDims z{};
  z.batch = intField(o, P, "batch", 0);
  z.hq = intField(o, P, "hq", 0);
  z.hkv = intField(o, P, "hkv", 1);
  if (z.hq % z.hkv != 0)
    rangeError(env, "problem.hkv", "a divisor of hq = " + std::to_string(z.hq), std::to_string(z.hkv));
  z.group = z.hq / z.hkv;
  z.nq = intField(o, P, "nq", 0, INT64_C(1) << 31);
  z.nk = intField(o, P, "nk", 0, INT64_C(1) << 31);
  z.d = intField(o, P, "d", 16, 256);
  z.dv = intField(o, P, "dv", 16, 256);
  if (z.d % 16 != 0) rangeError(env, "problem.d", "a multiple of 16 in [16, 256]", std::to_string(z.d));
  if (z.dv % 16 != 0)
    rangeError(env, "problem.dv", "a multiple of 16 in [16, 256]", std::to_string(z.dv));
  Napi::Value g = o.Get("granularity");
  const char* gWant = "\"block\", \"warp\" or \"thread\"";
  if (!g.IsString()) typeError(env, "problem.granularity", gWant, g);
  const std::string gs = g.As<Napi::String>().Utf8Value();
  const int64_t q16 = (z.nq + 15) / 16, k64 = (z.nk + 63) / 64;
  z.nQB = (z.nq + 127) / 128;
  if (gs == "block") {
    z.granularity = SageGranularity::kBlock;
    z.nQG = z.nQB;
    z.nKG = k64;
  } else if (gs == "warp") {
    z.granularity = SageGranularity::kWarp;
    z.nQG = q16;
    z.nKG = k64;
  } else if (gs == "thread") {
    z.granularity = SageGranularity::kThread;
    z.nQG = q16 * 8;
    z.nKG = k64 * 4;
  } else {
    rangeError(env, "problem.granularity", gWant, "\"" + gs + "\"");
  }
  return z;
}

int32_t pvBitsArg(const Napi::Object& o) {
  const int64_t bits = intField(o, "problem.", "pvBits", 8, 32);
  if (bits != 8 && bits != 32)
    rangeError(o.Env(), "problem.pvBits", "8 or 32", std::to_string(bits));
  return static_cast<int32_t>(bits);
}

Napi::Object sageProblemObject(const Napi::Value& v, Keep& keep, const char* what) {
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
    typeError(v.Env(), "problem", std::string("an object (") + what + ")", v);
  Napi::Object o = v.As<Napi::Object>();
  keep.add(o);
  return o;
}

// Whether int8 codes lie in [-127, 127] (the kernels' products assume it: VNNI's offset by 128,
// AVX2's |q| and sign(q) k never saturate there).
void checkCodes(Napi::Env env, const char* name, const int8_t* x, int64_t n) {
  // memchr: the C library's vectorised scan (a byte loop here took 2% of a forward).
  const void* hit = n > 0 ? std::memchr(x, 0x80, static_cast<size_t>(n)) : nullptr;
  if (hit != nullptr) {
    const int64_t i = static_cast<const int8_t*>(hit) - x;
    rangeError(env, std::string(name) + "[" + std::to_string(i) + "]", "a code in [-127, 127]", "-128");
  }
}


// sage.quantize: inputs q, k, v (f32, BHND), qBits (Uint8Array [hq], 4 or 8 each); outputs the
// codec: qCodes, qScale, kCodes, kScale, vCodes and vScale (pvBits 8), bias (smoothQ).
class SageQuantize : public Call {
 public:
  explicit SageQuantize(const SageQuantizeCall& c) { c_ = c; }
  Presence presence(bool output, size_t i) const override {
    if (output && (i == 4 || i == 5)) return c_.pvBits == 8 ? Presence::kRequired : Presence::kAbsent;
    if (output && i == 6) return c_.smoothQ ? Presence::kRequired : Presence::kAbsent;
    return Presence::kRequired;
  }
  const char* absentWhy(bool, size_t i) const override {
    return i == 6 ? "problem.smoothQ is false: no bias" : "problem.pvBits is 32: V stays f32";
  }
  int64_t length(bool output, size_t i) const override {
    const SageDims& z = c_.z;
    const int64_t q = z.batch * z.hq, kv = z.batch * z.hkv;
    if (output) {
      const int64_t n[7] = {q * z.nq * z.d, q * z.nQG,       kv * z.nk * z.d, kv * z.nKG,
                            kv * z.nk * z.dv, kv * z.dv, q * z.nQB * z.nk};
      return n[i];
    }
    const int64_t n[4] = {q * z.nq * z.d, kv * z.nk * z.d, kv * z.nk * z.dv, z.hq};
    return n[i];
  }
  const char* lengthWhy(bool output, size_t i) const override {
    if (output) {
      const char* w[7] = {"batch x hq x nq x d",  "batch x hq x Q groups",  "batch x hkv x nk x d",
                          "batch x hkv x K groups", "batch x hkv x nk x dv", "batch x hkv x dv",
                          "batch x hq x ceil(nq / 128) x nk"};
      return w[i];
    }
    const char* w[4] = {"batch x hq x nq x d", "batch x hkv x nk x d", "batch x hkv x nk x dv",
                        "one per query head"};
    return w[i];
  }
  void bind(bool output, size_t i, float* x) override {
    if (!output) {
      (i == 0 ? c_.q : i == 1 ? c_.k : c_.v) = x;
      return;
    }
    (i == 1 ? c_.qScale : i == 3 ? c_.kScale : i == 5 ? c_.vScale : c_.bias) = x;
  }
  void bindBytes(bool output, size_t i, void* x) override {
    if (!output) {
      c_.qBits = static_cast<const uint8_t*>(x);
      return;
    }
    (i == 0 ? c_.qCodes : i == 2 ? c_.kCodes : c_.vCodes) = static_cast<int8_t*>(x);
  }
  const void* data() const override { return &c_; }
  void check(Napi::Env env) const override {
    for (int64_t h = 0; h < c_.z.hq; h++)
      if (c_.qBits[h] != 4 && c_.qBits[h] != 8)
        rangeError(env, "inputs.qBits[" + std::to_string(h) + "]", "4 or 8", std::to_string(c_.qBits[h]));
  }
  static std::unique_ptr<Call> parse(const Napi::Value& v, Keep& keep) {
    Napi::Object o = sageProblemObject(v, keep, "NativeSageQuantizeProblem");
    SageQuantizeCall c{};
    c.z = sageDimsArg(o);
    c.smoothK = boolField(o, "smoothK");
    c.smoothQ = boolField(o, "smoothQ");
    c.pvBits = pvBitsArg(o);
    return std::make_unique<SageQuantize>(c);
  }

 private:
  SageQuantizeCall c_{};
};

// sage.forward: inputs the codec (qCodes, qScale, kCodes, kScale; vCodes and vScale with
// pvBits 8, v with 32; bias with smoothQ); outputs o and, optionally, lse.
class SageForward : public Call {
 public:
  explicit SageForward(const SageForwardCall& c, bool smoothQ) : smoothQ_(smoothQ) { c_ = c; }
  Presence presence(bool output, size_t i) const override {
    if (output) return i == 1 ? Presence::kOptional : Presence::kRequired;
    if (i == 4 || i == 5) return c_.pvBits == 8 ? Presence::kRequired : Presence::kAbsent;
    if (i == 6) return c_.pvBits == 32 ? Presence::kRequired : Presence::kAbsent;
    if (i == 7) return smoothQ_ ? Presence::kRequired : Presence::kAbsent;
    return Presence::kRequired;
  }
  const char* absentWhy(bool, size_t i) const override {
    if (i == 7) return "problem.smoothQ is false: no bias";
    return i == 6 ? "problem.pvBits is 8: V is read as codes" : "problem.pvBits is 32: V is read as f32";
  }
  int64_t length(bool output, size_t i) const override {
    const SageDims& z = c_.z;
    const int64_t q = z.batch * z.hq, kv = z.batch * z.hkv;
    if (output) return i == 0 ? q * z.nq * z.dv : q * z.nq;
    const int64_t n[8] = {q * z.nq * z.d,    q * z.nQG, kv * z.nk * z.d,  kv * z.nKG,
                          kv * z.nk * z.dv,  kv * z.dv, kv * z.nk * z.dv, q * z.nQB * z.nk};
    return n[i];
  }
  const char* lengthWhy(bool output, size_t i) const override {
    if (output) return i == 0 ? "batch x hq x nq x dv" : "batch x hq x nq";
    const char* w[8] = {"batch x hq x nq x d",   "batch x hq x Q groups", "batch x hkv x nk x d",
                        "batch x hkv x K groups", "batch x hkv x nk x dv", "batch x hkv x dv",
                        "batch x hkv x nk x dv", "batch x hq x ceil(nq / 128) x nk"};
    return w[i];
  }
  void bind(bool output, size_t i, float* x) override {
    if (output) {
      (i == 0 ? c_.o : c_.lse) = x;
      return;
    }
    const float** r[8] = {nullptr, &c_.qScale, nullptr, &c_.kScale, nullptr, &c_.vScale, &c_.v, &c_.bias};
    *r[i] = x;
  }
  void bindBytes(bool, size_t i, void* x) override {
    (i == 0 ? c_.qCodes : i == 2 ? c_.kCodes : c_.vCodes) = static_cast<const int8_t*>(x);
  }
  const void* data() const override { return &c_; }
  void check(Napi::Env env) const override {
    const SageDims& z = c_.z;
    const int64_t q = z.batch * z.hq, kv = z.batch * z.hkv;
    checkCodes(env, "inputs.qCodes", c_.qCodes, q * z.nq * z.d);
    checkCodes(env, "inputs.kCodes", c_.kCodes, kv * z.nk * z.d);
    checkFiniteArray(env, "inputs.qScale", c_.qScale, q * z.nQG);
    checkFiniteArray(env, "inputs.kScale", c_.kScale, kv * z.nKG);
    if (c_.vScale != nullptr) checkFiniteArray(env, "inputs.vScale", c_.vScale, kv * z.dv);
    if (c_.bias != nullptr) checkFiniteArray(env, "inputs.bias", c_.bias, q * z.nQB * z.nk);
  }
  // problem: the dims, granularity, pvBits, smoothQ (bias given), scale, left / right (the
  // window with causal folded in, -1 = unbounded), threads? (at most this many pool threads).
  static std::unique_ptr<Call> parse(const Napi::Value& v, Keep& keep) {
    Napi::Object o = sageProblemObject(v, keep, "NativeSageForwardProblem");
    Napi::Env env = o.Env();
    SageForwardCall c{};
    c.z = sageDimsArg(o);
    c.pvBits = pvBitsArg(o);
    const bool smoothQ = boolField(o, "smoothQ");
    Napi::Value scale = o.Get("scale");
    if (!scale.IsNumber()) typeError(env, "problem.scale", "a finite number", scale);
    const double s = scale.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(s)) rangeError(env, "problem.scale", "a finite number", std::to_string(s));
    c.scale = static_cast<float>(s);
    c.left = intField(o, "problem.", "left", -1);
    c.right = intField(o, "problem.", "right", -1);
    c.threads = o.Get("threads").IsUndefined() ? 0 : intField(o, "problem.", "threads", 1, 1024);
    return std::make_unique<SageForward>(c, smoothQ);
  }

 private:
  SageForwardCall c_{};
  bool smoothQ_;
};

// ---- Gated linear attention (KERNELS.md "Gated linear attention"; engine.h GlaDims) --------

// problem { batch, t, h, k, v, scale, chunkSize (chunk form) | form: 'recurrent', reverse?,
// sequences? }: with `sequences` (varlen, batch 1)
// the cuSeqlens input is required (sequences + 1 offsets), without it absent (n = batch).
GlaDims glaDimsArg(const Napi::Value& v, Keep& keep) {
  Napi::Env env = v.Env();
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
    typeError(env, "problem", "an object (NativeGlaProblem)", v);
  Napi::Object o = v.As<Napi::Object>();
  keep.add(o);
  const char* P = "problem.";
  GlaDims z{};
  z.batch = intField(o, P, "batch", 0);
  z.t = intField(o, P, "t", 0, INT64_C(1) << 31);
  z.h = intField(o, P, "h", 1);
  // K and V bound the per-thread scratch (a few chunk-sized K x V and C x K arrays).
  z.k = intField(o, P, "k", 1, 4096);
  z.v = intField(o, P, "v", 1, 4096);
  Napi::Value sc = o.Get("scale");
  if (!sc.IsNumber()) typeError(env, "problem.scale", "a finite number", sc);
  const double scale = sc.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(scale) || !std::isfinite(static_cast<float>(scale)))
    rangeError(env, "problem.scale", "a finite number", sc.ToString().Utf8Value());
  z.scale = static_cast<float>(scale);
  Napi::Value form = o.Get("form");
  if (!form.IsUndefined()) {
    const char* want = "\"chunk\" or \"recurrent\"";
    if (!form.IsString()) typeError(env, "problem.form", want, form);
    const std::string f = form.As<Napi::String>().Utf8Value();
    if (f != "chunk" && f != "recurrent") rangeError(env, "problem.form", want, "\"" + f + "\"");
    z.recurrent = f == "recurrent";
  }
  if (z.recurrent) {
    if (!o.Get("chunkSize").IsUndefined())
      typeError(env, "problem.chunkSize", "undefined (an option of the chunk form)", o.Get("chunkSize"));
    z.chunk = 0;
    Napi::Value r = o.Get("reverse");
    if (!r.IsUndefined()) z.reverse = boolField(o, "reverse");
  } else {
    if (!o.Get("reverse").IsUndefined())
      typeError(env, "problem.reverse", "undefined (an option of the recurrent form)", o.Get("reverse"));
    z.chunk = intField(o, P, "chunkSize", 16, 256);
    if ((z.chunk & (z.chunk - 1)) != 0)
      rangeError(env, "problem.chunkSize", "a power of two in [16, 256]", std::to_string(z.chunk));
  }
  if (o.Get("sequences").IsUndefined()) {
    z.n = z.batch;
  } else {
    z.n = intField(o, P, "sequences", 1, INT64_C(1) << 31);
    if (z.batch != 1)
      rangeError(env, "problem.batch", "1 with problem.sequences (packed varlen, as fla)",
                 std::to_string(z.batch));
  }
  return z;
}

// cuSeqlens: 0 first, t last, non-decreasing. gk: finite log-space gates <= 0.
void checkGla(Napi::Env env, const GlaDims& z, const float* gk, bool varlen) {
  if (varlen) {
    const int32_t* cu = z.cuSeqlens;
    for (int64_t i = 0; i <= z.n; i++) {
      const int64_t lo = i == 0 ? 0 : cu[i - 1];
      const int64_t hi = i == 0 ? 0 : z.t;
      const bool ok = cu[i] >= lo && cu[i] <= hi && (i < z.n || cu[i] == z.t);
      if (!ok)
        rangeError(env, "inputs.cuSeqlens[" + std::to_string(i) + "]",
                   i == 0 ? std::string("0")
                   : i == z.n
                       ? "t = " + std::to_string(z.t) + " (the last offset)"
                       : "an offset in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                             "] (non-decreasing)",
                   std::to_string(cu[i]));
    }
  }
  // Blocks without a branch per element (the compiler vectorises the flag), then the first bad
  // element of a flagged block: a scan at memory speed (16M gates: the per-element branch took
  // a tenth of a forward).
  const int64_t count = z.batch * z.t * z.h * z.k;
  constexpr int64_t kBlock = 4096;
  for (int64_t i0 = 0; i0 < count; i0 += kBlock) {
    const int64_t i1 = std::min(count, i0 + kBlock);
    int bad = 0;
    for (int64_t i = i0; i < i1; i++) {
      const float g = gk[i];
      // NaN fails g <= 0; -inf (and +inf) fail g - g == 0.
      bad |= static_cast<int>(!(g <= 0.0f)) | static_cast<int>(!(g - g == 0.0f));
    }
    if (bad == 0) continue;
    for (int64_t i = i0; i < i1; i++) {
      const float g = gk[i];
      if (g <= 0.0f && std::isfinite(g)) continue;
      rangeError(env, "inputs.gk[" + std::to_string(i) + "]",
                 "a finite log-space gate <= 0 (gk = log alpha, a decay alpha in (0, 1])",
                 std::to_string(g));
    }
  }
}

// gla.forward: inputs q, k, v, gk, h0 (optional), cuSeqlens (with problem.sequences); outputs o
// and ht (optional).
class GlaForward : public Call {
 public:
  GlaForward(const GlaDims& z, bool varlen) : varlen_(varlen) { c_.z = z; }
  Presence presence(bool output, size_t i) const override {
    if (output) return i == 1 ? Presence::kOptional : Presence::kRequired;
    if (i == 4) return Presence::kOptional;
    if (i == 5) return varlen_ ? Presence::kRequired : Presence::kAbsent;
    return Presence::kRequired;
  }
  const char* absentWhy(bool, size_t) const override {
    return "no problem.sequences: the batch rows are the sequences";
  }
  int64_t length(bool output, size_t i) const override {
    const GlaDims& z = c_.z;
    const int64_t rows = z.batch * z.t * z.h, state = z.n * z.h * z.k * z.v;
    if (output) return i == 0 ? rows * z.v : state;
    const int64_t n[6] = {rows * z.k, rows * z.k, rows * z.v, rows * z.k, state, z.n + 1};
    return n[i];
  }
  const char* lengthWhy(bool output, size_t i) const override {
    if (output) return i == 0 ? "batch x t x h x v" : "n x h x k x v";
    const char* w[6] = {"batch x t x h x k", "batch x t x h x k", "batch x t x h x v",
                        "batch x t x h x k", "n x h x k x v", "sequences + 1"};
    return w[i];
  }
  void bind(bool output, size_t i, float* x) override {
    if (output) {
      (i == 0 ? c_.o : c_.ht) = x;
      return;
    }
    const float** in[5] = {&c_.q, &c_.k, &c_.v, &c_.gk, &c_.h0};
    *in[i] = x;
  }
  void bindIndex(size_t, const int32_t* x) override { c_.z.cuSeqlens = x; }
  const void* data() const override { return &c_; }
  void check(Napi::Env env) const override { checkGla(env, c_.z, c_.gk, varlen_); }
  static std::unique_ptr<Call> parse(const Napi::Value& v, Keep& keep) {
    const GlaDims z = glaDimsArg(v, keep);
    return std::make_unique<GlaForward>(z, !v.As<Napi::Object>().Get("sequences").IsUndefined());
  }

 private:
  GlaForwardCall c_{};
  bool varlen_;
};

// gla.backward: inputs q, k, v, gk, h0 (optional), dO, dht (optional), cuSeqlens (with
// problem.sequences); outputs dq, dk, dv, dgk, dh0 (optional).
class GlaBackward : public Call {
 public:
  GlaBackward(const GlaDims& z, bool varlen) : varlen_(varlen) { c_.z = z; }
  Presence presence(bool output, size_t i) const override {
    if (output) return i == 4 ? Presence::kOptional : Presence::kRequired;
    if (i == 4 || i == 6) return Presence::kOptional;
    if (i == 7) return varlen_ ? Presence::kRequired : Presence::kAbsent;
    return Presence::kRequired;
  }
  const char* absentWhy(bool, size_t) const override {
    return "no problem.sequences: the batch rows are the sequences";
  }
  int64_t length(bool output, size_t i) const override {
    const GlaDims& z = c_.z;
    const int64_t rows = z.batch * z.t * z.h, state = z.n * z.h * z.k * z.v;
    if (output) {
      const int64_t n[5] = {rows * z.k, rows * z.k, rows * z.v, rows * z.k, state};
      return n[i];
    }
    const int64_t n[8] = {rows * z.k, rows * z.k, rows * z.v, rows * z.k,
                          state,      rows * z.v, state,      z.n + 1};
    return n[i];
  }
  const char* lengthWhy(bool output, size_t i) const override {
    if (output) {
      const char* w[5] = {"batch x t x h x k", "batch x t x h x k", "batch x t x h x v",
                          "batch x t x h x k", "n x h x k x v"};
      return w[i];
    }
    const char* w[8] = {"batch x t x h x k", "batch x t x h x k", "batch x t x h x v",
                        "batch x t x h x k", "n x h x k x v",     "batch x t x h x v",
                        "n x h x k x v",     "sequences + 1"};
    return w[i];
  }
  void bind(bool output, size_t i, float* x) override {
    if (output) {
      float** out[5] = {&c_.dq, &c_.dk, &c_.dv, &c_.dgk, &c_.dh0};
      *out[i] = x;
      return;
    }
    const float** in[7] = {&c_.q, &c_.k, &c_.v, &c_.gk, &c_.h0, &c_.dO, &c_.dht};
    *in[i] = x;
  }
  void bindIndex(size_t, const int32_t* x) override { c_.z.cuSeqlens = x; }
  const void* data() const override { return &c_; }
  void check(Napi::Env env) const override { checkGla(env, c_.z, c_.gk, varlen_); }
  static std::unique_ptr<Call> parse(const Napi::Value& v, Keep& keep) {
    const GlaDims z = glaDimsArg(v, keep);
    return std::make_unique<GlaBackward>(z, !v.As<Napi::Object>().Get("sequences").IsUndefined());
  }

 private:
  GlaBackwardCall c_{};
  bool varlen_;
};

// ---- The nn ops (engine.h NnCall) ------------------------------------------------------------

// A field of an nn op's problem, stored in order: `count` integers in [min, max] (count > 1: an
// Array of exactly count) into NnCall.n, or a number into NnCall.x: finite (count 0) or any
// (count -1: data such as affine's a and b, where inf and NaN propagate as in the ts kernels).
struct NnField {
  const char* key;
  int count;
  int64_t min, max;
};

struct NnSpec {
  const char* name;
  std::vector<NnField> fields;
  std::vector<ArgSpec> inputs, outputs;
  // Which arrays the problem uses (null: all required).
  Presence (*presence)(const NnCall& c, bool output, size_t i);
  int64_t (*length)(const NnCall& c, bool output, size_t i);
  const char* lengthWhy;
  bool atLeast;  // the lengths are minimums (nn.map's strided views)
  // The problem's values beyond each field's range, and the bound index arrays' values
  // (null: nothing to check); they throw RangeError naming the field or element.
  void (*checkProblem)(Napi::Env env, const NnCall& c);
  void (*checkArrays)(Napi::Env env, const NnCall& c);
};

constexpr int64_t kI32Max = (INT64_C(1) << 31) - 1;
constexpr int64_t kLen = INT64_C(1) << 40;

Presence requiredIf(bool yes) { return yes ? Presence::kRequired : Presence::kAbsent; }

// Lengths from the fields, saturating: a product past int64 must fail the length check, never
// wrap around to an array's real length.
int64_t mul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}
int64_t add(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_add_overflow(a, b, &r) ? INT64_MAX : r;
}

int64_t stridedSpan(const NnCall& c, const int64_t* strides) {
  int64_t s = 1;
  for (int64_t d = 0; d < c.n[1]; d++) {
    if (c.n[2 + d] == 0) return 0;
    s = add(s, mul(c.n[2 + d] - 1, strides[d]));
  }
  return s;
}

void checkIds(Napi::Env env, const char* name, const int32_t* ids, int64_t count, int64_t lo,
              int64_t hi, int64_t allowed = INT64_MIN) {
  for (int64_t i = 0; i < count; i++) {
    if (ids[i] == allowed) continue;
    if (ids[i] < lo || ids[i] >= hi)
      rangeError(env, std::string("inputs.") + name + "[" + std::to_string(i) + "]",
                 "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi - 1) + "]" +
                     (allowed != INT64_MIN ? " or " + std::to_string(allowed) : ""),
                 std::to_string(ids[i]));
  }
}

const std::vector<NnSpec>& nnSpecs() {
  static const std::vector<NnSpec> s = {
      {kOpNnMap,
       {{"op", 1, 0, kMapMaxBackward}, {"rank", 1, 0, kNnMaxRank}, {"dims", kNnMaxRank, 0, kLen},
        {"yOffset", 1, 0, kLen}, {"yStrides", kNnMaxRank, 0, kLen}, {"aOffset", 1, 0, kLen},
        {"aStrides", kNnMaxRank, 0, kLen}, {"bStrides", kNnMaxRank, 0, kLen}},
       {{"a"}, {"b"}, {"c"}},
       {{"y"}},
       [](const NnCall& c, bool output, size_t i) {
         const int64_t op = c.n[0];
         if (output || i == 0) return Presence::kRequired;
         return requiredIf(i == 1 ? op <= kMapDiv || op == kMapMaxBackward : op == kMapMaxBackward);
       },
       [](const NnCall& c, bool output, size_t i) {
         if (output) return add(c.n[10], stridedSpan(c, c.n + 11));
         return i == 0 ? add(c.n[19], stridedSpan(c, c.n + 20)) : stridedSpan(c, c.n + 28);
       },
       "offset + the last element the dims and strides reach",
       true, nullptr, nullptr},
      {kOpNnUnary,
       {{"op", 1, 0, kUnAffine}, {"count", 1, 0, kLen}, {"backward", 1, 0, 1}, {"a", -1, 0, 0},
        {"b", -1, 0, 0}},
       {{"x"}, {"y"}, {"dy"}},
       {{"out"}},
       [](const NnCall& c, bool output, size_t i) {
         return requiredIf(output || i == 0 || c.n[2] != 0);
       },
       [](const NnCall& c, bool, size_t) { return c.n[1]; },
       "problem.count", false,
       [](Napi::Env env, const NnCall& c) {
         if (c.n[2] != 0 && c.n[0] == kUnAffine)
           rangeError(env, "problem.backward", "0 for op affine (its gradient is a * dy)", "1");
       },
       nullptr},
      {kOpNnSoftmax,
       {{"rows", 1, 0, kLen}, {"cols", 1, 0, kLen}, {"log", 1, 0, 1}, {"backward", 1, 0, 1}},
       {{"x"}, {"dy"}},
       {{"out"}},
       [](const NnCall& c, bool output, size_t i) { return requiredIf(output || i == 0 || c.n[3] != 0); },
       [](const NnCall& c, bool, size_t) { return mul(c.n[0], c.n[1]); },
       "rows x cols", false, nullptr, nullptr},
      {kOpNnNorm,
       {{"rows", 1, 0, kLen}, {"cols", 1, 0, kLen}, {"rms", 1, 0, 1}, {"hasWeight", 1, 0, 1},
        {"hasBias", 1, 0, 1}, {"eps", 0, 0, 0}},
       {{"x"}, {"weight"}, {"bias"}},
       {{"y"}, {"mean"}, {"rstd"}},
       [](const NnCall& c, bool output, size_t i) {
         if (output) return requiredIf(i != 1 || c.n[2] == 0);
         return requiredIf(i == 0 || (i == 1 ? c.n[3] != 0 : c.n[4] != 0));
       },
       [](const NnCall& c, bool output, size_t i) {
         if (output) return i == 0 ? mul(c.n[0], c.n[1]) : c.n[0];
         return i == 0 ? mul(c.n[0], c.n[1]) : c.n[1];
       },
       "rows x cols for x and y, cols for weight and bias, rows for mean and rstd", false,
       [](Napi::Env env, const NnCall& c) {
         if (c.n[2] != 0 && c.n[4] != 0)
           rangeError(env, "problem.hasBias", "0 with rms (rmsNorm has no bias)", "1");
       },
       nullptr},
      {kOpNnNormBackward,
       {{"rows", 1, 0, kLen}, {"cols", 1, 0, kLen}, {"rms", 1, 0, 1}, {"hasWeight", 1, 0, 1}},
       {{"x"}, {"weight"}, {"mean"}, {"rstd"}, {"dy"}},
       {{"dx"}, {"dweight"}, {"dbias"}},
       [](const NnCall& c, bool output, size_t i) {
         if (output) return requiredIf(i != 2 || c.n[2] == 0);
         return requiredIf(i == 1 ? c.n[3] != 0 : i != 2 || c.n[2] == 0);
       },
       [](const NnCall& c, bool output, size_t i) {
         if (output) return i == 0 ? mul(c.n[0], c.n[1]) : c.n[1];
         const int64_t n[5] = {mul(c.n[0], c.n[1]), c.n[1], c.n[0], c.n[0], mul(c.n[0], c.n[1])};
         return n[i];
       },
       "rows x cols for x, dy and dx, cols for weight and its gradients, rows for mean and rstd",
       false, nullptr, nullptr},
      {kOpNnCrossEntropy,
       {{"rows", 1, 0, kLen}, {"cols", 1, 0, kLen}, {"ignoreIndex", 1, -kI32Max - 1, kI32Max}},
       {{"logits"}, {"targets", ArgType::kIndex}},
       {{"lse"}},
       nullptr,
       [](const NnCall& c, bool output, size_t i) {
         return !output && i == 0 ? mul(c.n[0], c.n[1]) : c.n[0];
       },
       "rows x cols for logits, rows for targets and lse", false, nullptr,
       [](Napi::Env env, const NnCall& c) { checkIds(env, "targets", c.idx[1], c.n[0], 0, c.n[1], c.n[2]); }},
      {kOpNnCrossEntropyBackward,
       {{"rows", 1, 0, kLen}, {"cols", 1, 0, kLen}, {"ignoreIndex", 1, -kI32Max - 1, kI32Max},
        {"scale", -1, 0, 0}},
       {{"logits"}, {"targets", ArgType::kIndex}, {"lse"}},
       {{"dx"}},
       nullptr,
       [](const NnCall& c, bool output, size_t i) {
         return output || i == 0 ? mul(c.n[0], c.n[1]) : c.n[0];
       },
       "rows x cols for logits and dx, rows for targets and lse", false, nullptr,
       [](Napi::Env env, const NnCall& c) { checkIds(env, "targets", c.idx[1], c.n[0], 0, c.n[1], c.n[2]); }},
      {kOpNnGather,
       {{"rows", 1, 0, kLen}, {"dim", 1, 0, kLen}, {"count", 1, 0, kLen}},
       {{"weight"}, {"ids", ArgType::kIndex}},
       {{"y"}},
       nullptr,
       [](const NnCall& c, bool output, size_t i) {
         if (output) return mul(c.n[2], c.n[1]);
         return i == 0 ? mul(c.n[0], c.n[1]) : c.n[2];
       },
       "rows x dim for weight, count for ids, count x dim for y", false, nullptr,
       [](Napi::Env env, const NnCall& c) { checkIds(env, "ids", c.idx[1], c.n[2], 0, c.n[0]); }},
      {kOpNnScatterAdd,
       {{"rows", 1, 0, kLen}, {"dim", 1, 0, kLen}, {"count", 1, 0, kLen}},
       {{"ids", ArgType::kIndex}, {"dy"}},
       {{"y"}},
       nullptr,
       [](const NnCall& c, bool output, size_t i) {
         if (output) return mul(c.n[0], c.n[1]);
         return i == 0 ? c.n[2] : mul(c.n[2], c.n[1]);
       },
       "count for ids, count x dim for dy, rows x dim for y", false, nullptr,
       [](Napi::Env env, const NnCall& c) { checkIds(env, "ids", c.idx[0], c.n[2], 0, c.n[0]); }},
      {kOpNnRope,
       {{"rows", 1, 0, kLen}, {"d", 1, 0, kLen}, {"tokens", 1, 1, kLen}, {"halves", 1, 0, kLen},
        {"sections", 1, 0, 4}, {"dims", 4, 0, kLen}},
       {{"x"}, {"cos"}, {"sin"}},
       {{"y"}},
       nullptr,
       [](const NnCall& c, bool output, size_t i) {
         return output || i == 0 ? mul(c.n[0], c.n[1]) : mul(c.n[2], c.n[3]);
       },
       "rows x d for x and y, tokens x halves for cos and sin", false,
       [](Napi::Env env, const NnCall& c) {
         int64_t total = 0;
         for (int64_t s = 0; s < c.n[4]; s++) {
           if (c.n[5 + s] % 2 != 0)
             rangeError(env, "problem.dims[" + std::to_string(s) + "]", "an even number",
                        std::to_string(c.n[5 + s]));
           total += c.n[5 + s];
         }
         if (total > c.n[1] || total != 2 * c.n[3])
           rangeError(env, "problem.halves",
                      "half the sections' dims (" + std::to_string(total) + ", at most d = " +
                          std::to_string(c.n[1]) + ")",
                      std::to_string(c.n[3]));
         if (c.n[0] % c.n[2] != 0)
           rangeError(env, "problem.rows", "a multiple of tokens = " + std::to_string(c.n[2]),
                      std::to_string(c.n[0]));
       },
       nullptr},
      {kOpNnMatmul,
       {{"batch", 1, 0, kLen}, {"m", 1, 0, kLen}, {"n", 1, 0, kLen}, {"k", 1, 0, kLen},
        {"transA", 1, 0, 1}, {"transB", 1, 0, 1}, {"matsA", 1, 0, kLen}, {"matsB", 1, 0, kLen}},
       {{"a"}, {"b"}, {"ia", ArgType::kIndex}, {"ib", ArgType::kIndex}},
       {{"c"}},
       nullptr,
       [](const NnCall& c, bool output, size_t i) {
         if (output) return mul(mul(c.n[0], c.n[1]), c.n[2]);
         const int64_t n[4] = {mul(mul(c.n[6], c.n[1]), c.n[3]), mul(mul(c.n[7], c.n[3]), c.n[2]), c.n[0], c.n[0]};
         return n[i];
       },
       "matsA x m x k for a, matsB x k x n for b, batch for ia and ib, batch x m x n for c",
       false, nullptr,
       [](Napi::Env env, const NnCall& c) {
         checkIds(env, "ia", c.idx[2], c.n[0], 0, c.n[6]);
         checkIds(env, "ib", c.idx[3], c.n[0], 0, c.n[7]);
       }},
      {kOpNnAdamw,
       {{"count", 1, 0, kLen}, {"lr", 0, 0, 0}, {"beta1", 0, 0, 0}, {"beta2", 0, 0, 0},
        {"eps", 0, 0, 0}, {"weightDecay", 0, 0, 0}, {"bc1", 0, 0, 0}, {"bc2", 0, 0, 0}},
       {{"p"}, {"g"}, {"m"}, {"v"}},
       {{"p"}, {"m"}, {"v"}},
       nullptr, [](const NnCall& c, bool, size_t) { return c.n[0]; }, "problem.count", false,
       nullptr, nullptr},
      {kOpNnSgd,
       {{"count", 1, 0, kLen}, {"hasBuf", 1, 0, 1}, {"momentumBuf", 1, 0, 1}, {"lr", 0, 0, 0},
        {"momentum", 0, 0, 0}, {"dampening", 0, 0, 0}, {"weightDecay", 0, 0, 0},
        {"nesterov", 0, 0, 0}},
       {{"p"}, {"g"}, {"buf"}},
       {{"p"}, {"buf"}},
       [](const NnCall& c, bool output, size_t i) {
         if (output) return requiredIf(i == 0 || c.n[2] != 0);
         return requiredIf(i < 2 || c.n[1] != 0);
       },
       [](const NnCall& c, bool, size_t) { return c.n[0]; }, "problem.count", false, nullptr,
       nullptr},
      {kOpNnSumSquares,
       {{"count", 1, 0, kLen}, {"chunks", 1, 1, 1 << 20}},
       {{"x"}},
       {{"partials"}},
       nullptr,
       [](const NnCall& c, bool output, size_t) { return output ? c.n[1] : c.n[0]; },
       "problem.count for x, problem.chunks for partials", false, nullptr, nullptr},
      // Halves (f16 or bf16 bit patterns) to f32: x is the halves' bytes seen as floats (two
      // halves a float, the last one padded), so count halves take ceil(count / 2) floats.
      {kOpNnDecodeHalf,
       {{"count", 1, 0, kLen}, {"bf16", 1, 0, 1}},
       {{"x"}},
       {{"out"}},
       nullptr,
       [](const NnCall& c, bool output, size_t) { return output ? c.n[0] : (c.n[0] + 1) / 2; },
       "ceil(problem.count / 2) for x (two halves a float), problem.count for out", false, nullptr,
       nullptr},
  };
  return s;
}

constexpr size_t kNnOps = 15;

// A call of one nn op: its fields parsed into an NnCall, the arrays bound by position.
class NnOp : public Call {
 public:
  explicit NnOp(const NnSpec& s) : s_(s) {}
  Presence presence(bool output, size_t i) const override {
    return s_.presence != nullptr ? s_.presence(c_, output, i) : Presence::kRequired;
  }
  const char* absentWhy(bool, size_t) const override {
    return "not used by this problem's flags";
  }
  int64_t length(bool output, size_t i) const override { return s_.length(c_, output, i); }
  const char* lengthWhy(bool, size_t) const override { return s_.lengthWhy; }
  bool atLeast(bool, size_t) const override { return s_.atLeast; }
  void bind(bool output, size_t i, float* x) override {
    if (output)
      c_.out[i] = x;
    else
      c_.in[i] = x;
  }
  void bindIndex(size_t i, const int32_t* x) override { c_.idx[i] = x; }
  const void* data() const override { return &c_; }
  void check(Napi::Env env) const override {
    if (s_.checkArrays != nullptr) s_.checkArrays(env, c_);
  }

  static std::unique_ptr<Call> parse(const NnSpec& s, const Napi::Value& v, Keep& keep) {
    Napi::Env env = v.Env();
    if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
      typeError(env, "problem", std::string("an object (the problem of ") + s.name + ")", v);
    Napi::Object o = v.As<Napi::Object>();
    keep.add(o);
    auto call = std::make_unique<NnOp>(s);
    NnCall& c = call->c_;
    int ni = 0, nx = 0;
    for (const NnField& f : s.fields) {
      const std::string name = std::string("problem.") + f.key;
      if (f.count <= 0) {
        Napi::Value x = o.Get(f.key);
        if (!x.IsNumber()) typeError(env, name, f.count == 0 ? "a finite number" : "a number", x);
        const double d = x.As<Napi::Number>().DoubleValue();
        if (f.count == 0 && !std::isfinite(d))
          rangeError(env, name, "a finite number", x.ToString().Utf8Value());
        c.x[nx++] = d;
      } else if (f.count == 1) {
        c.n[ni++] = intField(o, "problem.", f.key, f.min, f.max);
      } else {
        Napi::Value a = o.Get(f.key);
        if (!a.IsArray() || a.As<Napi::Array>().Length() != static_cast<uint32_t>(f.count))
          typeError(env, name, "an Array of " + std::to_string(f.count) + " integers", a);
        Napi::Array arr = a.As<Napi::Array>();
        for (uint32_t i = 0; i < static_cast<uint32_t>(f.count); i++) {
          const std::string at = name + "[" + std::to_string(i) + "]";
          Napi::Value e = arr.Get(i);
          const double d = e.IsNumber() ? e.As<Napi::Number>().DoubleValue() : NAN;
          if (!e.IsNumber()) typeError(env, at, "an integer", e);
          if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(f.min) ||
              d > static_cast<double>(f.max))
            rangeError(env, at,
                       "an integer in [" + std::to_string(f.min) + ", " + std::to_string(f.max) + "]",
                       e.ToString().Utf8Value());
          c.n[ni++] = static_cast<int64_t>(d);
        }
      }
    }
    if (s.checkProblem != nullptr) s.checkProblem(env, c);
    return call;
  }

 private:
  const NnSpec& s_;
  NnCall c_{};
};

template <size_t I>
std::unique_ptr<Call> parseNn(const Napi::Value& v, Keep& keep) {
  return NnOp::parse(nnSpecs()[I], v, keep);
}

template <size_t... I>
void addNnDescriptors(std::vector<OpDesc>& d, std::index_sequence<I...>) {
  if (nnSpecs().size() != sizeof...(I)) std::abort();  // kNnOps is the length of nnSpecs()
  (d.push_back({nnSpecs()[I].name, nnSpecs()[I].inputs, nnSpecs()[I].outputs, parseNn<I>}), ...);
}

const std::vector<OpDesc>& descriptors() {
  static const std::vector<OpDesc> d = [] {
    std::vector<OpDesc> v = {
      // permQ / permK (optional Int32Arrays, engine.h): the permuted-tiles hook.
      {kOpAttentionForward,
       {{"q"}, {"k"}, {"v"}, {"permQ", ArgType::kIndex}, {"permK", ArgType::kIndex}},
       {{"o"}, {"lse"}},
       AttentionForward::parse},
      {kOpAttentionBackward,
       {{"q"}, {"k"}, {"v"}, {"o"}, {"lse"}, {"dO"}, {"permQ", ArgType::kIndex},
        {"permK", ArgType::kIndex}},
       {{"dq"}, {"dk"}, {"dv"}, {"dsinks"}, {"dPositionTable"}, {"dTimestampTable"}},
       AttentionBackward::parse},
      {kOpGemm, {{"a"}, {"b"}}, {{"c"}}, Gemm::parse},
      {kOpSageQuantize,
       {{"q"}, {"k"}, {"v"}, {"qBits", ArgType::kU8}},
       {{"qCodes", ArgType::kI8},
        {"qScale"},
        {"kCodes", ArgType::kI8},
        {"kScale"},
        {"vCodes", ArgType::kI8},
        {"vScale"},
        {"bias"}},
       SageQuantize::parse},
      {kOpSageForward,
       {{"qCodes", ArgType::kI8},
        {"qScale"},
        {"kCodes", ArgType::kI8},
        {"kScale"},
        {"vCodes", ArgType::kI8},
        {"vScale"},
        {"v"},
        {"bias"}},
       {{"o"}, {"lse"}},
       SageForward::parse},
      {kOpGlaForward,
       {{"q"}, {"k"}, {"v"}, {"gk"}, {"h0"}, {"cuSeqlens", ArgType::kIndex}},
       {{"o"}, {"ht"}},
       GlaForward::parse},
      {kOpGlaBackward,
       {{"q"}, {"k"}, {"v"}, {"gk"}, {"h0"}, {"dO"}, {"dht"}, {"cuSeqlens", ArgType::kIndex}},
       {{"dq"}, {"dk"}, {"dv"}, {"dgk"}, {"dh0"}},
       GlaBackward::parse},
    };
    addNnDescriptors(v, std::make_index_sequence<kNnOps>{});
    return v;
  }();
  return d;
}

std::string opNames() {
  std::string names;
  for (const OpDesc& d : descriptors()) names += (names.empty() ? "\"" : ", \"") + std::string(d.name) + "\"";
  return names;
}

const OpDesc& opArg(const Napi::Value& v) {
  if (!v.IsString()) typeError(v.Env(), "op", "a string (" + opNames() + ")", v);
  const std::string op = v.As<Napi::String>().Utf8Value();
  for (const OpDesc& d : descriptors())
    if (op == d.name) return d;
  rangeError(v.Env(), "op", "one of " + opNames(), "\"" + op + "\"");
}

std::string isaNames() {
  std::string names;
  for (const Isa& i : isas()) names += (names.empty() ? "" : ", ") + std::string(i.name);
  return names;
}

// The ISA cap: undefined = the best ISA of each op; else one this CPU runs.
const Isa* isaArg(const Napi::Value& v) {
  if (v.IsUndefined()) return nullptr;
  if (!v.IsString()) typeError(v.Env(), "isa", "a string (" + isaNames() + ") or undefined", v);
  const std::string name = v.As<Napi::String>().Utf8Value();
  for (const Isa& i : isas())
    if (name == i.name) return &i;
  rangeError(v.Env(), "isa", "one of the ISAs this CPU supports (" + isaNames() + ")",
             "\"" + name + "\"");
}

// The kernel of `op` on the best ISA (at or below the cap's rank).
Chosen choose(Napi::Env env, const char* op, const Isa* cap) {
  for (const Chosen& c : kernelsOf(op))
    if (cap == nullptr || c.isa->rank <= cap->rank) return c;
  rangeError(env, "isa", std::string("an ISA with a kernel of \"") + op + "\"",
             cap != nullptr ? cap->name : "none");
}

struct Bound {
  const char* name;
  const uint8_t* begin;
  const uint8_t* end;
};

// Checks and binds the arrays of one side (inputs or outputs) of a call.
void bindArrays(const Napi::Value& v, bool output, const std::vector<ArgSpec>& specs,
                const OpDesc& d, Call& call, Keep& keep, std::vector<Bound>& bound) {
  Napi::Env env = v.Env();
  const std::string side = output ? "outputs" : "inputs";
  std::string names;
  for (const ArgSpec& s : specs) names += (names.empty() ? "" : ", ") + std::string(s.name);
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray())
    typeError(env, side, "an object { " + names + " } of typed arrays", v);
  Napi::Object o = v.As<Napi::Object>();
  keep.add(o);
  Napi::Array keys = o.GetPropertyNames();
  for (uint32_t n = 0; n < keys.Length(); n++) {
    const std::string key = keys.Get(n).ToString().Utf8Value();
    bool known = false;
    for (const ArgSpec& s : specs) known = known || key == s.name;
    if (!known)
      rangeError(env, side + "." + key,
                 "one of " + names + " (the " + side + " of " + d.name + ")", "an unknown name");
  }
  for (size_t i = 0; i < specs.size(); i++) {
    const std::string name = side + "." + specs[i].name;
    Napi::Value a = o.Get(specs[i].name);
    const Presence presence = call.presence(output, i);
    if (presence == Presence::kAbsent) {
      if (!a.IsUndefined())
        rangeError(env, name, std::string("undefined (") + call.absentWhy(output, i) + ")",
                   describe(a));
      continue;
    }
    if (presence == Presence::kOptional && a.IsUndefined()) continue;
    const int64_t want = call.length(output, i);
    if (specs[i].type == ArgType::kI8 || specs[i].type == ArgType::kU8) {
      const bool i8 = specs[i].type == ArgType::kI8;
      const napi_typedarray_type want8 = i8 ? napi_int8_array : napi_uint8_array;
      if (!a.IsTypedArray() || a.As<Napi::TypedArray>().TypedArrayType() != want8)
        typeError(env, name, i8 ? "an Int8Array" : "a Uint8Array", a);
      Napi::TypedArray ta = a.As<Napi::TypedArray>();
      const int64_t len = static_cast<int64_t>(ta.ElementLength());
      if (len != want) {
        rangeError(env, name, std::to_string(want) + " elements (" + call.lengthWhy(output, i) + ")",
                   std::to_string(len) + " elements");
      }
      keep.add(a);
      uint8_t* data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
      call.bindBytes(output, i, data);
      bound.push_back({specs[i].name, data, data + len});
      continue;
    }
    if (specs[i].type == ArgType::kIndex) {
      // Values are trusted (the family layer validates the permutations); the length is not.
      auto idx = arrayArg<int32_t, napi_int32_array>(a, name, "Int32Array");
      if (idx.length != want) {
        rangeError(env, name, std::to_string(want) + " elements (" + call.lengthWhy(output, i) + ")",
                   std::to_string(idx.length) + " elements");
      }
      keep.add(a);
      call.bindIndex(i, idx.data);
      const uint8_t* b = reinterpret_cast<const uint8_t*>(idx.data);
      bound.push_back({specs[i].name, b, b + idx.length * 4});
      continue;
    }
    F32 arr = f32Arg(a, name);
    if (call.atLeast(output, i) ? arr.length < want : arr.length != want) {
      rangeError(env, name,
                 std::string(call.atLeast(output, i) ? "at least " : "") + std::to_string(want) +
                     " elements (" + call.lengthWhy(output, i) + ")",
                 std::to_string(arr.length) + " elements");
    }
    keep.add(a);
    call.bind(output, i, arr.data);
    const uint8_t* b = reinterpret_cast<const uint8_t*>(arr.data);
    bound.push_back({specs[i].name, b, b + arr.length * 4});
  }
}

// Outputs must not share memory with any other array of the call (the kernels write them
// while reading the others, off the JS thread).
void checkOverlaps(Napi::Env env, const std::vector<Bound>& bound, size_t firstOutput) {
  for (size_t i = firstOutput; i < bound.size(); i++) {
    for (size_t j = 0; j < i; j++) {
      if (bound[i].begin == bound[i].end || bound[j].begin == bound[j].end) continue;
      if (bound[i].begin < bound[j].end && bound[j].begin < bound[i].end) {
        const std::string other = (j < firstOutput ? "inputs." : "outputs.") + std::string(bound[j].name);
        rangeError(env, "outputs." + std::string(bound[i].name),
                   "an array sharing no memory with " + other, "overlapping arrays");
      }
    }
  }
}

class Worker : public Napi::AsyncWorker {
 public:
  Worker(Napi::Env env, const OpKernel* kernel, std::unique_ptr<Call> call, Keep keep)
      : Napi::AsyncWorker(env),
        kernel_(kernel),
        call_(std::move(call)),
        keep_(std::move(keep)),
        deferred_(env) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    const char* err = kernel_->run(call_->data());
    if (err != nullptr) SetError(err);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  const OpKernel* kernel_;
  std::unique_ptr<Call> call_;
  Keep keep_;
  Napi::Promise::Deferred deferred_;
};

void expectArgs(const Napi::CallbackInfo& info, size_t min, size_t max, const char* fn) {
  if (info.Length() < min || info.Length() > max)
    throw Napi::TypeError::New(info.Env(), std::string(fn) + ": expected " + std::to_string(min) +
                                               (min == max ? "" : " to " + std::to_string(max)) +
                                               " arguments, got " + std::to_string(info.Length()));
}

// A checked call: the op's kernel on the chosen ISA, its call struct and the JS values it holds.
struct Prepared {
  const OpKernel* kernel;
  std::unique_ptr<Call> call;
  Keep keep;
};

// Validates (op, problem, inputs, outputs, isa?) against the op's descriptor; throws TypeError /
// RangeError naming the argument.
Prepared prepare(const Napi::CallbackInfo& info, const char* fn) {
  expectArgs(info, 4, 5, fn);
  Napi::Env env = info.Env();
  const OpDesc& d = opArg(info[0]);
  const Chosen chosen = choose(env, d.name, isaArg(info[4]));
  Keep keep;
  std::unique_ptr<Call> call = d.parse(info[1], keep);
  std::vector<Bound> bound;
  bindArrays(info[2], false, d.inputs, d, *call, keep, bound);
  const size_t firstOutput = bound.size();
  bindArrays(info[3], true, d.outputs, d, *call, keep, bound);
  checkOverlaps(env, bound, firstOutput);
  call->check(env);
  return {chosen.kernel, std::move(call), std::move(keep)};
}

// run(op, problem, inputs, outputs, isa?) -> Promise<void>: the op's kernel on the best ISA
// (capped by isa), off the JS thread. Validation errors throw synchronously.
Napi::Value Run(const Napi::CallbackInfo& info) {
  Prepared p = prepare(info, "run");
  Worker* w = new Worker(info.Env(), p.kernel, std::move(p.call), std::move(p.keep));
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

// runSync(op, problem, inputs, outputs, isa?) -> undefined: as run, but the calling thread runs
// the kernel (and takes part in its parallel regions on the pool) and returns when it is done;
// for callers whose API is synchronous (@attnkit/nn's kernels). Blocks the JS thread meanwhile.
Napi::Value RunSync(const Napi::CallbackInfo& info) {
  Prepared p = prepare(info, "runSync");
  const char* err = p.kernel->run(p.call->data());
  if (err != nullptr) throw Napi::Error::New(info.Env(), err);
  return info.Env().Undefined();
}

// scratch(op, problem, isa?) -> { perThreadBytes, sharedBytes, isa }: what the op's kernel
// allocates besides its arrays (attention.backward: O(maxSeqQ d) per thread, whatever B and H).
Napi::Value Scratch(const Napi::CallbackInfo& info) {
  expectArgs(info, 2, 3, "scratch");
  Napi::Env env = info.Env();
  const OpDesc& d = opArg(info[0]);
  const Chosen chosen = choose(env, d.name, isaArg(info[2]));
  Keep keep;
  std::unique_ptr<Call> call = d.parse(info[1], keep);
  int64_t perThread = 0, shared = 0;
  if (chosen.kernel->scratch != nullptr) chosen.kernel->scratch(call->data(), &perThread, &shared);
  Napi::Object out = Napi::Object::New(env);
  out.Set("perThreadBytes", Napi::Number::New(env, static_cast<double>(perThread) * 4));
  out.Set("sharedBytes", Napi::Number::New(env, static_cast<double>(shared) * 4));
  out.Set("isa", Napi::String::New(env, chosen.isa->name));
  return out;
}

// ops(isa?) -> { [op]: { isas: [...best first], chosen, inputs: [...], outputs: [...] } }.
Napi::Value Ops(const Napi::CallbackInfo& info) {
  expectArgs(info, 0, 1, "ops");
  Napi::Env env = info.Env();
  const Isa* cap = isaArg(info[0]);
  Napi::Object out = Napi::Object::New(env);
  for (const OpDesc& d : descriptors()) {
    Napi::Object o = Napi::Object::New(env);
    Napi::Array list = Napi::Array::New(env);
    uint32_t n = 0;
    const char* chosen = nullptr;
    for (const Chosen& c : kernelsOf(d.name)) {
      list.Set(n++, Napi::String::New(env, c.isa->name));
      if (chosen == nullptr && (cap == nullptr || c.isa->rank <= cap->rank)) chosen = c.isa->name;
    }
    o.Set("isas", list);
    o.Set("chosen", chosen != nullptr ? Napi::Value(Napi::String::New(env, chosen)) : env.Null());
    for (int side = 0; side < 2; side++) {
      const std::vector<ArgSpec>& specs = side == 0 ? d.inputs : d.outputs;
      Napi::Array names = Napi::Array::New(env);
      for (uint32_t i = 0; i < specs.size(); i++) names.Set(i, Napi::String::New(env, specs[i].name));
      o.Set(side == 0 ? "inputs" : "outputs", names);
    }
    out.Set(d.name, o);
  }
  return out;
}

// planStreamK(tiles: Float64Array, workers) -> { workerStart: Float64Array (workers + 1),
// pieces: Float64Array (unit, begin, end triplets) }: the planner attention.forward's stream-K
// runs (stream_k.h), exposed so that a test can hold it to the TS planDecodePartition.
Napi::Value PlanStreamK(const Napi::CallbackInfo& info) {
  expectArgs(info, 2, 2, "planStreamK");
  Napi::Env env = info.Env();
  const auto tiles = arrayArg<double, napi_float64_array>(info[0], "tiles", "Float64Array");
  std::vector<int64_t> t(static_cast<size_t>(tiles.length));
  double total = 0;
  for (int64_t u = 0; u < tiles.length; u++) {
    const double x = tiles.data[u];
    if (!(x >= 0 && x <= 9007199254740991.0 && std::floor(x) == x))
      rangeError(env, "tiles[" + std::to_string(u) + "]", "a non-negative integer",
                 Napi::Number::New(env, x).ToString().Utf8Value());
    t[u] = static_cast<int64_t>(x);
    total += x;
  }
  if (total > 9007199254740991.0)
    rangeError(env, "tiles", "a total <= 2^53 - 1", Napi::Number::New(env, total).ToString().Utf8Value());
  if (!info[1].IsNumber()) typeError(env, "workers", "an integer", info[1]);
  const double w = info[1].As<Napi::Number>().DoubleValue();
  if (!(w >= 1 && w <= static_cast<double>(kMaxStreamKWorkers) && std::floor(w) == w))
    rangeError(env, "workers", "an integer in [1, " + std::to_string(kMaxStreamKWorkers) + "]",
               info[1].ToString().Utf8Value());
  const host::StreamKPlan plan = host::planStreamK(t.data(), tiles.length, static_cast<int64_t>(w));
  Napi::Float64Array starts = Napi::Float64Array::New(env, plan.workerStart.size());
  for (size_t i = 0; i < plan.workerStart.size(); i++) starts[i] = static_cast<double>(plan.workerStart[i]);
  Napi::Float64Array pieces = Napi::Float64Array::New(env, plan.pieces.size() * 3);
  for (size_t i = 0; i < plan.pieces.size(); i++) {
    pieces[3 * i] = static_cast<double>(plan.pieces[i].unit);
    pieces[3 * i + 1] = static_cast<double>(plan.pieces[i].begin);
    pieces[3 * i + 2] = static_cast<double>(plan.pieces[i].end);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("workerStart", starts);
  out.Set("pieces", pieces);
  return out;
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  Napi::Array names = Napi::Array::New(env);
  uint32_t i = 0;
  for (const Isa& isa : isas()) names.Set(i++, Napi::String::New(env, isa.name));
  out.Set("isas", names);
  out.Set("threads", Napi::Number::New(env, poolThreads()));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("ops", Napi::Function::New(env, Ops, "ops"));
  exports.Set("run", Napi::Function::New(env, Run, "run"));
  exports.Set("runSync", Napi::Function::New(env, RunSync, "runSync"));
  exports.Set("scratch", Napi::Function::New(env, Scratch, "scratch"));
  exports.Set("planStreamK", Napi::Function::New(env, PlanStreamK, "planStreamK"));
  return exports;
}

}  // namespace
}  // namespace attnkit

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return attnkit::Init(env, exports);
}

NODE_API_MODULE(attnkit_native, InitAddon)
