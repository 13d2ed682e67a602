// N-API surface of the engine: argument validation (TypeError / RangeError naming the
// argument), ISA selection, and the async (AsyncWorker + promise) and sync entry points.
// Arrays are used in place (zero-copy); an async call holds references to them until it ends.
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "engine.h"

namespace attnkit {
namespace {

std::vector<const KernelTable*> availableTables() {
  std::vector<const KernelTable*> tables;
#if defined(ATTNKIT_X86)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("fma")) {
    tables.push_back(kernelsAvx512());
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    tables.push_back(kernelsAvx2());
  }
#endif
  tables.push_back(kernelsScalar());
  return tables;
}

const std::vector<const KernelTable*>& tables() {
  static const std::vector<const KernelTable*> t = availableTables();
  return t;
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

const KernelTable* tableArg(const Napi::Value& v) {
  Napi::Env env = v.Env();
  std::string names;
  for (const KernelTable* t : tables()) names += (names.empty() ? "" : ", ") + std::string(t->isa);
  if (!v.IsString()) typeError(env, "isa", "a string (" + names + ")", v);
  const std::string isa = v.As<Napi::String>().Utf8Value();
  for (const KernelTable* t : tables())
    if (isa == t->isa) return t;
  rangeError(env, "isa", "one of the ISAs this CPU supports (" + names + ")", "\"" + isa + "\"");
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
  return p;
}

struct Sizes {
  int64_t q, k, v, o, lse;
};

Sizes sizesOf(const AttnProblem& p) {
  const int64_t rowsQ = p.thd ? p.totalQ * p.hq : p.batch * p.hq * p.maxSeqQ;
  const int64_t rowsK = p.thd ? p.totalK * p.hkv : p.batch * p.hkv * p.maxSeqK;
  return {rowsQ * p.d, rowsK * p.d, rowsK * p.dv, rowsQ * p.dv, rowsQ};
}

F32 checked(const Napi::CallbackInfo& info, size_t i, const char* name, int64_t want,
            const char* why, Keep& keep) {
  F32 a = f32Arg(info[i], name);
  expectLength(info.Env(), name, a.length, want, why);
  keep.add(info[i]);
  return a;
}

class Worker : public Napi::AsyncWorker {
 public:
  Worker(Napi::Env env, std::function<const char*()> job, Keep keep)
      : Napi::AsyncWorker(env), job_(std::move(job)), keep_(std::move(keep)), deferred_(env) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void Execute() override {
    const char* err = job_();
    if (err != nullptr) SetError(err);
  }
  void OnOK() override { deferred_.Resolve(Env().Undefined()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  std::function<const char*()> job_;
  Keep keep_;
  Napi::Promise::Deferred deferred_;
};

// Runs job now (sync) or on the libuv pool, resolving the returned promise when done.
Napi::Value dispatch(const Napi::CallbackInfo& info, size_t asyncIndex,
                     std::function<const char*()> job, Keep keep) {
  Napi::Env env = info.Env();
  Napi::Value asyncArg = info[asyncIndex];
  if (!asyncArg.IsBoolean()) typeError(env, "async", "a boolean", asyncArg);
  if (!asyncArg.As<Napi::Boolean>().Value()) {
    const char* err = job();
    if (err != nullptr) throw Napi::Error::New(env, err);
    return env.Undefined();
  }
  Worker* w = new Worker(env, std::move(job), std::move(keep));
  Napi::Promise promise = w->promise();
  w->Queue();
  return promise;
}

void expectArgs(const Napi::CallbackInfo& info, size_t n, const char* fn) {
  if (info.Length() != n)
    throw Napi::TypeError::New(info.Env(), std::string(fn) + ": expected " + std::to_string(n) +
                                               " arguments, got " +
                                               std::to_string(info.Length()));
}

// flashForward(isa, problem, q, k, v, o, lse, async)
Napi::Value FlashForward(const Napi::CallbackInfo& info) {
  expectArgs(info, 8, "flashForward");
  const KernelTable* t = tableArg(info[0]);
  Keep keep;
  AttnProblem p = problemArg(info[1], keep);
  const Sizes z = sizesOf(p);
  FlashForwardArgs a{};
  a.q = checked(info, 2, "q", z.q, "query rows x d", keep).data;
  a.k = checked(info, 3, "k", z.k, "key rows x d", keep).data;
  a.v = checked(info, 4, "v", z.v, "key rows x dv", keep).data;
  a.o = checked(info, 5, "o", z.o, "query rows x dv", keep).data;
  a.lse = checked(info, 6, "lse", z.lse, "one per query row and head", keep).data;
  return dispatch(info, 7, [t, p, a] { return t->flashForward(p, a); }, std::move(keep));
}

// flashBackward(isa, problem, q, k, v, o, lse, dO, dq, dk, dv, async)
Napi::Value FlashBackward(const Napi::CallbackInfo& info) {
  expectArgs(info, 12, "flashBackward");
  const KernelTable* t = tableArg(info[0]);
  Keep keep;
  AttnProblem p = problemArg(info[1], keep);
  const Sizes z = sizesOf(p);
  FlashBackwardArgs a{};
  a.q = checked(info, 2, "q", z.q, "query rows x d", keep).data;
  a.k = checked(info, 3, "k", z.k, "key rows x d", keep).data;
  a.v = checked(info, 4, "v", z.v, "key rows x dv", keep).data;
  a.o = checked(info, 5, "o", z.o, "query rows x dv", keep).data;
  a.lse = checked(info, 6, "lse", z.lse, "one per query row and head", keep).data;
  a.dO = checked(info, 7, "dO", z.o, "query rows x dv", keep).data;
  a.dq = checked(info, 8, "dq", z.q, "query rows x d", keep).data;
  a.dk = checked(info, 9, "dk", z.k, "key rows x d", keep).data;
  a.dv = checked(info, 10, "dv", z.v, "key rows x dv", keep).data;
  return dispatch(info, 11, [t, p, a] { return t->flashBackward(p, a); }, std::move(keep));
}

// flashBackwardScratch(isa, problem) -> { perThreadBytes, sharedBytes }: what flashBackward
// allocates besides its arguments (the per-thread part is O(maxSeqQ d), whatever B and H).
Napi::Value FlashBackwardScratch(const Napi::CallbackInfo& info) {
  expectArgs(info, 2, "flashBackwardScratch");
  Napi::Env env = info.Env();
  const KernelTable* t = tableArg(info[0]);
  Keep keep;
  AttnProblem p = problemArg(info[1], keep);
  int64_t perThread = 0, shared = 0;
  t->flashBackwardScratch(p, &perThread, &shared);
  Napi::Object out = Napi::Object::New(env);
  out.Set("perThreadBytes", Napi::Number::New(env, static_cast<double>(perThread) * 4));
  out.Set("sharedBytes", Napi::Number::New(env, static_cast<double>(shared) * 4));
  return out;
}

// Elements a row-major rows x cols matrix with leading dimension ld spans.
int64_t span(int64_t rows, int64_t cols, int64_t ld) {
  return rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
}

// gemm(isa, {transA, transB, m, n, k, alpha, beta, a, lda, b, ldb, c, ldc}, async)
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  expectArgs(info, 3, "gemm");
  Napi::Env env = info.Env();
  const KernelTable* t = tableArg(info[0]);
  if (!info[1].IsObject()) typeError(env, "args", "an object (NativeGemmArgs)", info[1]);
  Napi::Object o = info[1].As<Napi::Object>();
  Keep keep;
  GemmArgs g{};
  auto flag = [&](const char* key) {
    Napi::Value v = o.Get(key);
    if (!v.IsBoolean()) typeError(env, std::string("args.") + key, "a boolean", v);
    return v.As<Napi::Boolean>().Value();
  };
  auto number = [&](const char* key) {
    Napi::Value v = o.Get(key);
    if (!v.IsNumber()) typeError(env, std::string("args.") + key, "a number", v);
    const double x = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(x)) rangeError(env, std::string("args.") + key, "a finite number", std::to_string(x));
    return static_cast<float>(x);
  };
  g.transA = flag("transA");
  g.transB = flag("transB");
  g.m = intField(o, "args.", "m", 0);
  g.n = intField(o, "args.", "n", 0);
  g.k = intField(o, "args.", "k", 0);
  g.alpha = number("alpha");
  g.beta = number("beta");
  const int64_t aRows = g.transA ? g.k : g.m, aCols = g.transA ? g.m : g.k;
  const int64_t bRows = g.transB ? g.n : g.k, bCols = g.transB ? g.k : g.n;
  g.lda = intField(o, "args.", "lda", aCols > 1 ? aCols : 1);
  g.ldb = intField(o, "args.", "ldb", bCols > 1 ? bCols : 1);
  g.ldc = intField(o, "args.", "ldc", g.n > 1 ? g.n : 1);
  auto matrix = [&](const char* key, int64_t need) {
    const std::string name = std::string("args.") + key;
    Napi::Value v = o.Get(key);
    F32 a = f32Arg(v, name);
    if (a.length < need)
      rangeError(env, name, "at least " + std::to_string(need) + " elements (rows, cols, ld)",
                 std::to_string(a.length) + " elements");
    keep.add(v);
    return a.data;
  };
  g.a = matrix("a", span(aRows, aCols, g.lda));
  g.b = matrix("b", span(bRows, bCols, g.ldb));
  g.c = matrix("c", span(g.m, g.n, g.ldc));
  keep.add(o);
  return dispatch(info, 2, [t, g] { return t->gemm(g); }, std::move(keep));
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  Napi::Array isas = Napi::Array::New(env);
  uint32_t i = 0;
  for (const KernelTable* t : tables()) isas.Set(i++, Napi::String::New(env, t->isa));
  out.Set("isas", isas);
  out.Set("threads", Napi::Number::New(env, poolThreads()));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("flashForward", Napi::Function::New(env, FlashForward, "flashForward"));
  exports.Set("flashBackward", Napi::Function::New(env, FlashBackward, "flashBackward"));
  exports.Set("flashBackwardScratch",
              Napi::Function::New(env, FlashBackwardScratch, "flashBackwardScratch"));
  exports.Set("gemm", Napi::Function::New(env, Gemm, "gemm"));
  return exports;
}

}  // namespace
}  // namespace attnkit

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  return attnkit::Init(env, exports);
}

NODE_API_MODULE(attnkit_native, InitAddon)
