// attnkit_bench_dispatch: what cpu_dispatch costs per call. One baseline
// binary runs a decode step (f32 q, f16 K/V, d 128), where per-call
// overhead shows most, two ways: through cpu_dispatch, and as a direct
// cpu<xsimd::avx512bw> call compiled with the same flags as the dispatched
// AVX-512 kernels (dispatch/direct.cpp), alternating call by call.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <string>
#include <random>
#include <vector>

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/cpu_dispatch.hpp"
#include "dispatch/direct_decode.hpp"

namespace {

using attnkit_bench_dispatch::decode_buffers;

struct decode_inputs {
  std::vector<float> q, o;
  std::vector<attnkit::half> k, v;
  std::vector<unsigned char> scratch;
  decode_buffers b{};

  decode_inputs(std::int64_t hq, std::int64_t hkv, std::int64_t skv, std::int64_t d)
      : q(hq * d), o(hq * d), k(hkv * skv * d), v(hkv * skv * d) {
    std::mt19937 rng(7);
    std::normal_distribution<float> n;
    for (float& x : q) x = n(rng);
    for (auto* t : {&k, &v})
      for (attnkit::half& x : *t) x = attnkit::half(n(rng));
    b = {q.data(), k.data(), v.data(), o.data(), hq, hkv, skv, d, nullptr, 0};
  }
};

double median(std::vector<double> x) {
  std::nth_element(x.begin(), x.begin() + x.size() / 2, x.end());
  return x[x.size() / 2];
}

// range(0): skv, range(1): GQA group, range(2): hkv. Each iteration makes one direct and one
// dispatched call, in alternating order, and times each, so drift and noise
// hit both alike; the counters are the medians and their ratio.
void decode_call(benchmark::State& state) {
  const std::int64_t hkv = state.range(2), d = 128, skv = state.range(0), hq = hkv * state.range(1);
  const std::string arch = attnkit::cpu_dispatch_arch();  // avx512bf16 runs decode as avx512 does
  if (arch != "avx512" && arch != "avx512bf16") {
    state.SkipWithError("the direct call runs AVX-512 kernels; this CPU has none");
    return;
  }
  decode_inputs in(hq, hkv, skv, d);
  const auto q = attnkit::make_bhsd(static_cast<const float*>(in.q.data()), 1, hq, 1, d);
  const auto k = attnkit::make_bhsd(static_cast<const attnkit::half*>(in.k.data()), 1, hkv, skv, d);
  const auto v = attnkit::make_bhsd(static_cast<const attnkit::half*>(in.v.data()), 1, hkv, skv, d);
  const auto o = attnkit::make_bhsd(in.o.data(), 1, hq, 1, d);
  attnkit::cpu_dispatch backend;
  std::vector<unsigned char> dispatch_scratch(attnkit::flash_attention_workspace_size(q, k, v, backend));
  backend.scratch = {dispatch_scratch.data(), dispatch_scratch.size()};
  in.scratch.resize(attnkit_bench_dispatch::direct_decode_workspace(in.b));
  in.b.scratch = in.scratch.data();
  in.b.scratch_bytes = in.scratch.size();
  const auto timed = [](auto&& call) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    benchmark::ClobberMemory();
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  };
  const auto direct = [&] { attnkit_bench_dispatch::direct_decode(in.b); };
  const auto dispatched = [&] { attnkit::flash_attention(q, k, v, o, {}, {}, backend); };
  std::vector<double> direct_us, dispatched_us;
  bool flip = false;
  for (auto _ : state) {
    if ((flip = !flip)) {
      direct_us.push_back(timed(direct));
      dispatched_us.push_back(timed(dispatched));
    } else {
      dispatched_us.push_back(timed(dispatched));
      direct_us.push_back(timed(direct));
    }
  }
  state.counters["direct_us"] = median(direct_us);
  state.counters["dispatched_us"] = median(dispatched_us);
  state.counters["ratio"] = median(dispatched_us) / median(direct_us);
}
// The shape (skv 1024, hkv 8), and a call so small (16 keys, one head)
// that the difference of the medians is the front's own cost per call.
BENCHMARK(decode_call)
    ->Args({1024, 1, 8})
    ->Args({1024, 4, 8})
    ->Args({16, 1, 1})
    ->ArgNames({"skv", "group", "hkv"})
    ->MinTime(2.0)
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
