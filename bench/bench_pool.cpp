// Serving many sequences through one kv_pool (f16, hkv 8, hq 32, d 128, pages
// of 16 rows), cpu<xsimd::default_arch> on all threads:
//   pool_decode  one decode row for each of 64 sequences of ragged lengths
//                (100..4000): one pool_attention call for the batch against
//                64 calls, one per sequence. GB/s counts the K and V bytes read.
//   pool_step    a whole decode step of the same 64 sequences held near an
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
#include "attnkit/pool_attention.hpp"
#include "support/counters.hpp"
#include "support/machine.hpp"
#include "support/random.hpp"

namespace attnkit::bench {
namespace {

struct pool_batch {
  static constexpr std::int64_t sequences = 64, hkv = 8, hq = 32, d = 128;
  kv_pool<half> pool;
  std::vector<kv_pool<half>::sequence_id> ids;
  std::vector<std::int64_t> cu;
  tensor<float, 4> q{{1, hq, sequences, d}}, o{{1, hq, sequences, d}};
  tensor<float, 3> token{{hkv, 1, d}};
  std::mt19937_64 rng{42};

  /// Sequence s starts with length(s) random rows per head; the pool has `spare` more pages per head and sequence.
  template <class Length>
  pool_batch(Length&& length, std::int64_t spare) : pool(options(length, spare)) {
    test::fill_normal(q.data(), q.size(), rng);
    test::fill_normal(token.data(), token.size(), rng);
    for (std::int64_t s = 0; s < sequences; ++s) {
      ids.push_back(pool.add_sequence());
      tensor<float, 3> k({hkv, length(s), d}), v({hkv, length(s), d});
      test::fill_normal(k.data(), k.size(), rng);
      test::fill_normal(v.data(), v.size(), rng);
      pool.append(ids.back(), 0, k.cview(), v.cview());
    }
    for (std::int64_t s = 0; s <= sequences; ++s) cu.push_back(s);
  }

  template <class Length>
  static kv_pool_options options(Length&& length, std::int64_t spare) {
    kv_pool_options o;
    o.hkv = hkv;
    o.d = d;
    o.page_size = 16;
    o.max_sequences = sequences + 1;
    for (std::int64_t s = 0; s < sequences; ++s) o.num_pages += hkv * ((length(s) + 15) / 16 + spare);
    return o;
  }

  double kv_bytes() const {
    double rows = 0;
    for (auto s : ids)
      for (std::int64_t h = 0; h < hkv; ++h) rows += static_cast<double>(pool.index(s, 0).length(h));
    return rows * 2.0 * d * sizeof(half);
  }

  tensor_view<const std::int64_t, 1> cu_of(std::int64_t n) const { return {cu.data(), {n + 1}}; }
};

std::int64_t ragged_length(std::int64_t s) { return 100 + (s * 2477) % 3901; }  // 100..4000, spread

// range(0): 0 = one call for the batch, 1 = one call per sequence.
void pool_decode(benchmark::State& state) {
  pool_batch in(ragged_length, 1);
  cpu<xsimd::default_arch> backend;
  kv_batch all;
  in.pool.gather(0, in.ids, all);
  std::vector<kv_batch> each(in.ids.size());
  for (std::size_t s = 0; s < in.ids.size(); ++s) in.pool.gather(0, {in.ids[s]}, each[s]);
  const bool per_sequence = state.range(0) != 0;
  const auto rows = [&](const tensor<float, 4>& t, std::int64_t s, std::int64_t n) {
    return tensor_view<float, 4>(&t(0, 0, s, 0), {1, pool_batch::hq, n, pool_batch::d}, t.view().strides());
  };
  run_and_count(
      state,
      [&] {
        if (!per_sequence)
          return pool_attention(in.q.cview(), in.pool, all, in.cu_of(pool_batch::sequences), in.o.view(), {}, {}, {},
                                backend);
        for (std::int64_t s = 0; s < pool_batch::sequences; ++s)
          pool_attention(tensor_view<const float, 4>(rows(in.q, s, 1)), in.pool, each[s], in.cu_of(1), rows(in.o, s, 1),
                         {}, {}, {}, backend);
      },
      0.0, in.kv_bytes(), false, backend.exec.concurrency());
}
BENCHMARK(pool_decode)->Arg(0)->Arg(1)->ArgName("per_sequence")->Unit(benchmark::kMillisecond)->UseRealTime();

void pool_step(benchmark::State& state) {
  constexpr std::int64_t budget = 2048, slack = 63, n = pool_batch::sequences, hkv = pool_batch::hkv;
  // Lengths budget .. budget + 63: one sequence reaches budget + slack + 1 and evicts each step.
  pool_batch in([](std::int64_t s) { return budget + s; }, 8);
  std::vector<h2o> policies(static_cast<std::size_t>(n), h2o({budget, 0, 64, slack, {}}));
  const auto spare = in.pool.add_sequence();
  cpu<xsimd::default_arch> backend;
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
