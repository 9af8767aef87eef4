// KV eviction on the decode path: a cache held at a 2048-row budget (hkv 8,
// hq 32, d 128, f16), one token per step. policy_frac is what a step's
// observe + select + compact costs relative to its attention call (with key
// weights when the policy wants them); the target is <= 0.05. With slack 0 a
// step evicts one row and compaction shifts the rows after it (megabytes); slack
// 63 evicts 64 rows every 64 steps, so the cache stays within 3% over budget and
// compaction is paid once per batch.
#include <benchmark/benchmark.h>

#include "support/decode_stream.hpp"

namespace attnkit::bench {
namespace {

void kv_decode_step(benchmark::State& state) {
  const auto kind = static_cast<policy_kind>(state.range(0));
  const std::int64_t slack = state.range(1);
  state.SetLabel(policy_name(kind));
  with_policy(kind, 2048, slack, [&](auto& policy) {
    // Retrieval heads never shrink: give them room for every step this run may take.
    decode_stream s(2048, kind == policy_kind::duo ? 1 << 16 : slack + 1, 42);
    for (int warm = 0; warm < 64; ++warm) s.step(policy);
    s.attention_s = s.policy_s = 0;
    for (auto _ : state) {
      s.step(policy);
      if (s.next > (1 << 16) - 64) state.SkipWithError("cache headroom exhausted");
    }
    const double steps = static_cast<double>(state.iterations());
    state.counters["attention_us"] = 1e6 * s.attention_s / steps;
    state.counters["policy_us"] = 1e6 * s.policy_s / steps;
    state.counters["policy_frac"] = s.policy_s / s.attention_s;
  });
}
BENCHMARK(kv_decode_step)
    ->ArgsProduct({{0, 1, 2, 3, 4}, {0, 63}})
    ->ArgNames({"policy", "slack"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace
}  // namespace attnkit::bench
