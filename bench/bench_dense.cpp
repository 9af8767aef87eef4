// dense_attention (reference backend, one thread): prefill and decode.
#include <benchmark/benchmark.h>

#include "attnkit/attention/dense.hpp"
#include "support/counters.hpp"
#include "support/workloads.hpp"

namespace attnkit::bench {
namespace {

// Prefill: hq 8 over hkv 2, d 128, sq = skv = range(0), causal when range(1).
template <class T>
void dense_prefill(benchmark::State& state) {
  problem p;
  p.hq = 8, p.hkv = 2, p.sq = p.skv = state.range(0), p.d = p.dv = 128;
  attention_params params;
  params.causal = state.range(1) != 0;
  attention_inputs<T, T, T, T> in(p, 42);
  run_and_count(
      state, [&] { dense_attention(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view, params); },
      attention_flops(p, params.causal), kv_bytes(p, sizeof(T), sizeof(T)), true, 1);
}
BENCHMARK(dense_prefill<float>)->ArgsProduct({{128, 512}, {0, 1}})->ArgNames({"s", "causal"})->Unit(benchmark::kMillisecond);
BENCHMARK(dense_prefill<bfloat16>)->ArgsProduct({{512}, {1}})->ArgNames({"s", "causal"})->Unit(benchmark::kMillisecond);

// Decode: one query row per head, hq 32 over hkv 8, d 128, f16 K/V of length range(0).
void dense_decode_f16(benchmark::State& state) {
  problem p;
  p.hq = 32, p.hkv = 8, p.sq = 1, p.skv = state.range(0), p.d = p.dv = 128;
  attention_inputs<float, half, half, float> in(p, 42);
  run_and_count(
      state, [&] { dense_attention(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view, {}); },
      attention_flops(p, false), kv_bytes(p, sizeof(half), sizeof(half)), false, 1);
}
BENCHMARK(dense_decode_f16)->Arg(4096)->ArgName("skv")->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace attnkit::bench
