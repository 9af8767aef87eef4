// attnkit_bench_dispatch: what cpu_dispatch costs per call. One baseline
// binary runs a decode step (f32 q, f16 K/V, hkv 8, d 128), where per-call
// overhead shows most, two ways: through cpu_dispatch, and as a direct
// cpu<xsimd::avx512bw> call compiled with the same flags as the dispatched
// AVX-512 kernels (dispatch/direct.cpp). Compare the two medians of one run.
#include <benchmark/benchmark.h>

#include <cstdint>
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

// range(0): skv, range(1): GQA group, range(2): 0 direct cpu<avx512bw>, 1 cpu_dispatch.
void decode_call(benchmark::State& state) {
  const std::int64_t hkv = 8, d = 128, skv = state.range(0), hq = hkv * state.range(1);
  const bool dispatched = state.range(2) != 0;
  if (!dispatched && attnkit::cpu_dispatch_arch() != std::string("avx512")) {
    state.SkipWithError("the direct call runs AVX-512 kernels; this CPU has none");
    return;
  }
  decode_inputs in(hq, hkv, skv, d);
  const auto q = attnkit::make_bhsd(static_cast<const float*>(in.q.data()), 1, hq, 1, d);
  const auto k = attnkit::make_bhsd(static_cast<const attnkit::half*>(in.k.data()), 1, hkv, skv, d);
  const auto v = attnkit::make_bhsd(static_cast<const attnkit::half*>(in.v.data()), 1, hkv, skv, d);
  const auto o = attnkit::make_bhsd(in.o.data(), 1, hq, 1, d);
  attnkit::cpu_dispatch backend;
  in.scratch.resize(dispatched ? attnkit::flash_attention_workspace_size(q, k, v, backend)
                               : attnkit_bench_dispatch::direct_decode_workspace(in.b));
  backend.scratch = {in.scratch.data(), in.scratch.size()};
  in.b.scratch = in.scratch.data();
  in.b.scratch_bytes = in.scratch.size();
  for (auto _ : state) {
    if (dispatched)
      attnkit::flash_attention(q, k, v, o, {}, {}, backend);
    else
      attnkit_bench_dispatch::direct_decode(in.b);
    benchmark::ClobberMemory();
  }
  state.SetLabel(dispatched ? std::string("cpu_dispatch (") + attnkit::cpu_dispatch_arch() + ")"
                            : "direct cpu<avx512bw>");
}
BENCHMARK(decode_call)
    ->ArgsProduct({{1024}, {1, 4}, {0, 1}})
    ->ArgNames({"skv", "group", "dispatched"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
