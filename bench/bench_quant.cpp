// Quantized KV against f16 KV, cpu_native on all threads,
// caller workspace, f32 q and o, hkv 8, d 128:
//   quant_decode   one query row per head over skv = range(0) keys, hq = 8 * range(1):
//                  bound by the bytes of K and V it reads. GB/s counts the bytes
//                  actually read (K, V and int8's per-row fp32 scales);
//                  peak_frac = those bytes / DRAM read bandwidth over the time.
//   quant_prefill  sq = range(0) rows over skv = range(1) keys, GQA 1, no mask:
//                  compute bound; GFLOP/s and the fraction of the FMA peak.
// The K/V type is the template argument: half is the baseline the others are
// read against (their ratio to it, in one run, is what the README quotes).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <type_traits>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/core/tensor.hpp"
#include "support/counters.hpp"
#include "support/workloads.hpp"

namespace attnkit::bench {
namespace {

using arch = native_arch;

/// Random K or V (1, hkv, skv, d) of type T with its scales: codes drawn
/// uniformly (fp8 NaN codes excepted), int8 row scales and fp8 head scales of 1/64.
template <class T>
struct kv_of {
  tensor<T, 4> data;
  std::vector<float> rows, heads;
  kv_scales scales;

  kv_of(std::int64_t hkv, std::int64_t skv, std::int64_t d, std::mt19937_64& rng) : data({1, hkv, skv, d}) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_int_distribution<int> byte(0, 255);
    for (std::int64_t i = 0; i < data.size(); ++i) {
      if constexpr (is_quantized_v<T>) {
        int c = byte(rng);
        if (std::is_same_v<T, fp8_e4m3> && (c & 0x7f) == 0x7f) c ^= 1;   // not NaN
        if (std::is_same_v<T, fp8_e5m2> && (c & 0x7c) == 0x7c) c ^= 0x40;  // not inf or NaN
        if (std::is_same_v<T, std::int8_t> && c == 128) c = 129;           // -128 is never stored
        std::memcpy(&data.data()[i], &c, 1);
      } else {
        data.data()[i] = from_float<T>(normal(rng));
      }
    }
    if constexpr (std::is_same_v<T, std::int8_t>) {
      rows.assign(static_cast<std::size_t>(hkv * skv), 1.0f / 64);
      scales.rows = tensor_view<const float, 3>(rows.data(), {1, hkv, skv});
    } else if constexpr (is_quantized_v<T>) {
      heads.assign(static_cast<std::size_t>(hkv), 1.0f / 64);
      scales.heads = tensor_view<const float, 2>(heads.data(), {1, hkv});
    }
  }

  /// Bytes a call reads of it: the data and int8's row scales.
  double bytes() const {
    return static_cast<double>(data.size()) * sizeof(T) + rows.size() * 4.0;
  }
};

template <class T>
void run_quant(benchmark::State& state, const problem& p, bool compute_bound) {
  std::mt19937_64 rng(42);
  const kv_of<T> k(p.hkv, p.skv, p.d, rng), v(p.hkv, p.skv, p.dv, rng);
  tensor<float, 4> q({1, p.hq, p.sq, p.d}), o({1, p.hq, p.sq, p.dv});
  test::fill_normal(q.data(), q.size(), rng);
  auto a = make_attention_args(q.cview(), k.data.cview(), v.data.cview(), o.view());
  a.k.scales = k.scales;
  a.v.scales = v.scales;
  cpu<arch> backend;
  std::vector<unsigned char> scratch(flash_attention_workspace_size(a, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  run_and_count(
      state, [&] { flash_attention(a, backend); }, attention_flops(p, false), k.bytes() + v.bytes(), compute_bound,
      backend.exec.concurrency());
}

template <class T>
void quant_decode(benchmark::State& state) {
  problem p;
  p.hkv = 8, p.hq = 8 * state.range(1), p.sq = 1, p.skv = state.range(0), p.d = p.dv = 128;
  run_quant<T>(state, p, false);
}
template <class T>
void quant_prefill(benchmark::State& state) {
  problem p;
  p.hkv = 8, p.hq = 8, p.sq = state.range(0), p.skv = state.range(1), p.d = p.dv = 128;
  run_quant<T>(state, p, true);
}

#define ATTNKIT_QUANT_BENCH(T)                                                                                     \
  BENCHMARK(quant_decode<T>)                                                                                       \
      ->ArgsProduct({{131072}, {1, 4}})                                                                            \
      ->ArgNames({"skv", "group"})                                                                                 \
      ->Unit(benchmark::kMillisecond)                                                                              \
      ->UseRealTime();                                                                                             \
  BENCHMARK(quant_prefill<T>)->Args({1024, 4096})->ArgNames({"sq", "skv"})->Unit(benchmark::kMillisecond)->UseRealTime();

ATTNKIT_QUANT_BENCH(half)
ATTNKIT_QUANT_BENCH(std::int8_t)
ATTNKIT_QUANT_BENCH(fp8_e4m3)
ATTNKIT_QUANT_BENCH(fp8_e5m2)

}  // namespace
}  // namespace attnkit::bench
