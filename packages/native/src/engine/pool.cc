// The persistent worker pool: sized once per process from ATTNKIT_NUM_THREADS or the CPUs this
// process may run on. Workers spin briefly after a region before sleeping, because GEMM and
// attention issue several short regions back to back.
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#include "engine.h"

namespace attnkit {
namespace {

int detectThreads() {
  const char* env = std::getenv("ATTNKIT_NUM_THREADS");
  if (env != nullptr && *env != '\0') {
    char* end = nullptr;
    long n = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && n >= 1 && n <= 1024) return static_cast<int>(n);
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n >= 1) return n;
  }
#endif
  unsigned hc = std::thread::hardware_concurrency();
  return hc >= 1 ? static_cast<int>(hc) : 1;
}

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int t = 1; t < threads_; t++) workers_.emplace_back([this, t] { workerLoop(t); });
  }

  int threads() const { return threads_; }

  void run(int64_t n, TaskFn fn, void* ctx) {
    if (n <= 0) return;
    if (threads_ == 1 || n == 1) {
      for (int64_t i = 0; i < n; i++) fn(ctx, i, 0);
      return;
    }
    std::lock_guard<std::mutex> region(regionMutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      fn_ = fn;
      ctx_ = ctx;
      n_ = n;
      next_.store(0, std::memory_order_relaxed);
      pending_.store(threads_ - 1, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_.notify_all();
    drain(0);
    while (pending_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }

 private:
  void drain(int thread) {
    for (;;) {
      int64_t i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= n_) break;
      fn_(ctx_, i, thread);
    }
  }

  void workerLoop(int thread) {
    uint64_t seen = 0;
    for (;;) {
      uint64_t g = generation_.load(std::memory_order_acquire);
      for (int spin = 0; g == seen && spin < 4000; spin++) {
        std::this_thread::yield();
        g = generation_.load(std::memory_order_acquire);
      }
      if (g == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
        g = generation_.load(std::memory_order_acquire);
      }
      seen = g;
      drain(thread);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex regionMutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int64_t> next_{0};
  std::atomic<int> pending_{0};
  TaskFn fn_ = nullptr;
  void* ctx_ = nullptr;
  int64_t n_ = 0;
};

// Never destroyed: workers block on the condition variable until the process exits, so no
// static destructor may tear it down under them.
Pool& pool() {
  static Pool* p = new Pool(detectThreads());
  return *p;
}

}  // namespace

void parallelFor(int64_t n, TaskFn fn, void* ctx) { pool().run(n, fn, ctx); }

int poolThreads() { return pool().threads(); }

float* allocFloats(int64_t count) {
  size_t bytes = static_cast<size_t>(count > 0 ? count : 1) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  return static_cast<float*>(std::aligned_alloc(64, bytes));
}

void freeFloats(float* p) { std::free(p); }

}  // namespace attnkit
