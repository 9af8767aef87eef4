// Serving many sequences through one kv_pool (f16, hkv 8, hq 32, d 128, pages
// of 16 rows), cpu_native on all threads:
//   pool_decode  one decode row for each of 64 sequences of ragged lengths
//                (100..3941): one pool_attention call for the batch against
//                64 calls, one per sequence. GB/s counts the K and V bytes read.
//   pool_step    a whole decode step of 64 sequences held near an
//                H2O budget of 2048 rows (slack 63): append a token to each,
//                gather, one attention call with key weights, each policy's
//                observe and evict, plus a fork and a one-token truncate
//                (speculative rollback). ops_frac = cache operations / attention time.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdint>
#include <random>
#include <vector>

#include "attnkit/kv/evict.hpp"
#include "attnkit/kv/policy/h2o.hpp"
#include "attnkit/cached_attention.hpp"
#include "support/counters.hpp"
#include "support/machine.hpp"
#include "support/pool_batch.hpp"

namespace attnkit::bench {
namespace {

// range(0): 0 = one call for the batch, 1 = one call per sequence.
void pool_decode(benchmark::State& state) {
  pool_batch in(64, ragged_length, 1, 42);
  in.gather_all();
  cpu_native backend;
  const bool per_sequence = state.range(0) != 0;
  run_and_count(
      state, [&] { per_sequence ? in.decode_each(backend) : in.decode_batch(backend); }, 0.0, in.kv_bytes(), false,
      backend.exec.concurrency());
}
BENCHMARK(pool_decode)->Arg(0)->Arg(1)->ArgName("per_sequence")->Unit(benchmark::kMillisecond)->UseRealTime();

void pool_step(benchmark::State& state) {
  constexpr std::int64_t budget = 2048, slack = 63, n = 64, hkv = pool_batch::hkv;
  // Lengths budget .. budget + 63: one sequence reaches budget + slack + 1 and evicts each step.
  pool_batch in(n, [](std::int64_t s) { return budget + s; }, 8, 42);
  std::vector<h2o> policies(static_cast<std::size_t>(n), h2o({budget, 0, 64, slack, {}}));
  const auto spare = in.pool.add_sequence();
  cpu_native backend;
  kv_batch batch;
  const std::int64_t capacity = budget + slack + 1;
  std::vector<float> weights(static_cast<std::size_t>(hkv * n * capacity));
  key_weights kw;
  kw.out = tensor_view<float, 3>(weights.data(), {hkv, n, capacity});
  const tensor_view<const float, 3> all_weights(kw.out);
  // Seconds per phase: append + gather, attention, observe, evict, fork + truncate.
  double append_s = 0, attention_s = 0, observe_s = 0, evict_s = 0, fork_s = 0;
  const auto timed = [](double& total, auto&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    total += seconds_since(t0);
  };
  std::int64_t step = 0;
  for (auto _ : state) {
    timed(append_s, [&] {
      for (auto s : in.ids) in.pool.append(s, 0, in.token.cview(), in.token.cview());
      in.pool.gather(0, in.ids, batch);
    });
    timed(attention_s,
          [&] { pool_attention(in.q.cview(), in.pool, batch, in.cu_of(n), in.o.view(), {}, {}, kw, backend); });
    timed(observe_s, [&] {
      for (std::int64_t s = 0; s < n; ++s)
        policies[s].observe(in.pool.index(in.ids[s], 0), sequence_key_weights(all_weights, s), 1);
    });
    timed(evict_s, [&] {
      for (std::int64_t s = 0; s < n; ++s) evict(in.pool, in.ids[s], 0, policies[s]);
    });
    timed(fork_s, [&] {
      const auto drafted = in.ids[step++ % n];
      in.pool.fork(drafted, spare);                                  // a speculative branch: shares every page
      in.pool.append(spare, 0, in.token.cview(), in.token.cview());  // copies one page per head
      in.pool.truncate(spare, in.pool.index(spare, 0).seen() - 1);   // and rolls the draft back
    });
  }
  const double steps = static_cast<double>(state.iterations()), ops_s = append_s + observe_s + evict_s + fork_s;
  state.counters["attention_us"] = 1e6 * attention_s / steps;
  state.counters["append_us"] = 1e6 * append_s / steps;
  state.counters["observe_us"] = 1e6 * observe_s / steps;
  state.counters["evict_us"] = 1e6 * evict_s / steps;
  state.counters["fork_us"] = 1e6 * fork_s / steps;
  state.counters["ops_frac"] = ops_s / attention_s;
}
BENCHMARK(pool_step)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace attnkit::bench
