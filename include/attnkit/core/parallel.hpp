// executor and parallel_for: where the kernels' independent work items run.
//
// Engines own their threads, so besides serial and OpenMP an executor can wrap
// the caller's own parallel_for(n, task). Kernels size their work split by
// concurrency(), so results that depend on the split depend only on it.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <utility>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

ATTNKIT_BEGIN_NAMESPACE

class executor {
 public:
  /// Where the work items run.
  enum class kind { serial, openmp, custom };

  /// A caller's parallel loop: run task(i) once for every i in [0, n), then return.
  using runner = std::function<void(std::int64_t n, const std::function<void(std::int64_t)>& task)>;

  /// Everything on the calling thread.
  static executor serial() { return executor(kind::serial, 1, {}); }

#if defined(_OPENMP)
  /// An OpenMP team of `threads` threads (0: omp_get_max_threads()).
  static executor openmp(int threads = 0) {
    ATTNKIT_CHECK(threads >= 0, "executor::openmp: threads must be >= 0, got ", threads);
    return executor(kind::openmp, threads > 0 ? threads : omp_get_max_threads(), {});
  }
#endif

  /// The caller's thread pool; `concurrency` is how many tasks it runs at once.
  static executor custom(int concurrency, runner run) {
    ATTNKIT_CHECK(concurrency >= 1, "executor::custom: concurrency must be >= 1, got ", concurrency);
    ATTNKIT_CHECK(static_cast<bool>(run), "executor::custom: run must be callable");
    return executor(kind::custom, concurrency, std::move(run));
  }

  /// How many tasks may run at once.
  int concurrency() const { return concurrency_; }

  /// Serial, an OpenMP team, or the caller's parallel_for.
  kind runs_on() const { return kind_; }

  /// Runs task(i) for each i in [0, n) exactly once; returns when all are done.
  template <class Task>
  void parallel_for(std::int64_t n, Task&& task) const {
    if (n <= 0) return;
    if (kind_ == kind::serial || n == 1) {
      for (std::int64_t i = 0; i < n; ++i) task(i);
      return;
    }
#if defined(_OPENMP)
    if (kind_ == kind::openmp) {
#pragma omp parallel for num_threads(concurrency_) schedule(dynamic, 1)
      for (std::int64_t i = 0; i < n; ++i) task(i);
      return;
    }
#endif
    run_(n, std::function<void(std::int64_t)>(std::ref(task)));
  }

 private:
  executor(kind k, int concurrency, runner run) : kind_(k), concurrency_(concurrency), run_(std::move(run)) {}

  kind kind_;
  int concurrency_;
  runner run_;
};

/// OpenMP over all its threads when compiled with OpenMP, serial otherwise.
inline executor default_executor() {
#if defined(_OPENMP)
  return executor::openmp();
#else
  return executor::serial();
#endif
}

/// parallel_for(exec, n, task): task(i) for every i in [0, n) on exec.
template <class Task>
void parallel_for(const executor& exec, std::int64_t n, Task&& task) {
  exec.parallel_for(n, std::forward<Task>(task));
}

/// task(i, slot) for every i in [0, n): at most concurrency() tasks pull items from
/// a shared counter, so work balances dynamically and `slot` (in [0, concurrency()))
/// names scratch memory no other running item uses.
template <class Task>
void parallel_for_slots(const executor& exec, std::int64_t n, Task&& task) {
  const std::int64_t tasks = std::min<std::int64_t>(exec.concurrency(), n);
  std::atomic<std::int64_t> next{0};
  exec.parallel_for(tasks, [&](std::int64_t slot) {
    for (std::int64_t i = next.fetch_add(1, std::memory_order_relaxed); i < n;
         i = next.fetch_add(1, std::memory_order_relaxed))
      task(i, slot);
  });
}

ATTNKIT_END_NAMESPACE
