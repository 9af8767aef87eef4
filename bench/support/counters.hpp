// Google Benchmark counters shared by every attnkit_bench case: GFLOP/s, GB/s and
// the fraction of this machine's peak, measured once at startup by main().
#pragma once

#include <benchmark/benchmark.h>

#include <chrono>

#include "support/machine.hpp"

namespace attnkit::bench {

struct measured_machine {
  machine_limits one_thread;
  machine_limits all_threads;
};

/// Filled by attnkit_bench's main() before any benchmark runs.
inline measured_machine& machine() {
  static measured_machine m;
  return m;
}

/// Runs the benchmark loop over kernel() and sets its counters: GFLOP/s and GB/s for
/// `flops` and `bytes` per call, and peak_frac, the fraction of the FMA peak
/// (compute_bound) or of the DRAM read bandwidth that is, on `threads` threads.
template <class Kernel>
void run_and_count(benchmark::State& state, Kernel&& kernel, double flops, double bytes, bool compute_bound,
                   int threads) {
  double seconds = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    kernel();
    benchmark::ClobberMemory();
    seconds += seconds_since(t0);
  }
  const machine_limits& m = threads == 1 ? machine().one_thread : machine().all_threads;
  const double gflops = flops * static_cast<double>(state.iterations()) / seconds / 1e9;
  const double gbps = bytes * static_cast<double>(state.iterations()) / seconds / 1e9;
  state.counters["GFLOP/s"] = gflops;
  state.counters["GB/s"] = gbps;
  state.counters["peak_frac"] = compute_bound ? gflops / m.fma_gflops : gbps / m.read_gbps;
  state.counters["threads"] = threads;
}

}  // namespace attnkit::bench
