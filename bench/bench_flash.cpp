// flash_attention on cpu_native, all threads, caller workspace:
// the prefill and decode targets, and the peak memory of a 65536^2 prefill.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <type_traits>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "support/counters.hpp"
#include "support/workloads.hpp"

namespace attnkit::bench {
namespace {

using arch = native_arch;

template <class TQ, class TK, class TV, class TO>
void run_flash(benchmark::State& state, const problem& p, const attention_params& params, bool compute_bound) {
  attention_inputs<TQ, TK, TV, TO> in(p, 42);
  cpu<arch> backend;
  std::vector<unsigned char> scratch(flash_attention_workspace_size(in.q.cview(), in.k.cview(), in.v.cview(), backend));
  backend.scratch = {scratch.data(), scratch.size()};
  run_and_count(
      state, [&] { flash_attention(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view, params, {}, backend); },
      attention_flops(p, params.causal), kv_bytes(p, sizeof(TK), sizeof(TV)), compute_bound,
      backend.exec.concurrency());
  // bf16 prefill on the pair dot product: its fraction of that peak too.
  const double bf16_peak = machine().all_threads.bf16_dot_gflops;
  if (compute_bound && has_bf16_dot<arch> && std::is_same_v<TQ, bfloat16> && bf16_peak > 0)
    state.counters["bf16_peak_frac"] = state.counters["GFLOP/s"] / bf16_peak;
}

// Prefill: hkv 8, d 128, hq = 8 * range(2) (GQA), sq = range(0), skv = range(1), causal when range(3).
template <class T>
void flash_prefill(benchmark::State& state) {
  problem p;
  p.hkv = 8, p.hq = 8 * state.range(2), p.sq = state.range(0), p.skv = state.range(1), p.d = p.dv = 128;
  attention_params params;
  params.causal = state.range(3) != 0;
  run_flash<T, T, T, T>(state, p, params, true);
}
BENCHMARK(flash_prefill<float>)
    ->ArgsProduct({{4096}, {4096}, {1, 4}, {0, 1}})
    ->Args({512, 4096, 1, 0})
    ->ArgNames({"sq", "skv", "group", "causal"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(flash_prefill<bfloat16>)
    ->ArgsProduct({{4096}, {4096}, {1, 4}, {0, 1}})
    ->ArgNames({"sq", "skv", "group", "causal"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Decode: one query row per head, f32 q, f16 K/V; hkv 8, d 128, hq = 8 * range(1), skv = range(0).
// peak_frac is the bandwidth floor (K and V bytes / DRAM read bandwidth) over the time. At skv
// 16384 the 67 MB of K and V partly stay in a large L3 between calls (peak_frac can pass 1);
// at 131072 (537 MB) they come from DRAM.
void flash_decode_f16(benchmark::State& state) {
  problem p;
  p.hkv = 8, p.hq = 8 * state.range(1), p.sq = 1, p.skv = state.range(0), p.d = p.dv = 128;
  run_flash<float, half, half, float>(state, p, {}, false);
}
BENCHMARK(flash_decode_f16)
    ->ArgsProduct({{16384, 131072}, {1, 4, 8}})
    ->ArgNames({"skv", "group"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

/// Peak resident set (VmHWM) in MiB; writing 5 to clear_refs resets it.
double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  for (std::string key; status >> key;) {
    if (key == "VmHWM:") {
      double kib = 0;
      status >> kib;
      return kib / 1024.0;
    }
  }
  return 0;
}

// Memory: one head, fp32, causal prefill of sq = skv = range(0), d 128. Reports the
// peak resident set during the call minus inputs and output (target <= 64 MiB).
void flash_prefill_memory(benchmark::State& state) {
  problem p;
  p.sq = p.skv = state.range(0), p.d = p.dv = 128;
  attention_params params;
  params.causal = true;
  attention_inputs<float, float, float, float> in(p, 42);
  std::fill_n(in.o.storage.data(), in.o.storage.size(), 0.0f);  // the output's pages count as tensors, not overhead
  const double tensors_mib = 4.0 * p.sq * p.d * 4 / (1024.0 * 1024.0);  // q, k, v, o
  double extra = 0;
  for (auto _ : state) {
    std::ofstream("/proc/self/clear_refs") << "5";
    const double before = peak_rss_mib();
    flash_attention(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view, params);
    extra = peak_rss_mib() - before;
  }
  state.counters["tensors_MiB"] = tensors_mib;
  state.counters["peak_rss_MiB"] = peak_rss_mib();
  state.counters["over_tensors_MiB"] = extra;
  state.counters["GFLOP/s"] = benchmark::Counter(attention_flops(p, true) / 1e9, benchmark::Counter::kIsRate);
}
BENCHMARK(flash_prefill_memory)->Arg(65536)->ArgName("s")->Iterations(1)->Unit(benchmark::kSecond)->UseRealTime();

}  // namespace
}  // namespace attnkit::bench
