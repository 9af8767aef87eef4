// Block-sparse attention on cpu_native, all threads, caller
// workspace; f32 q and o, f16 K and V, d 128, causal:
//   sparse_executor  n = range(0) rows and keys, hq 8, hkv 2; a random layout of
//                    range(1) x range(2) blocks (block_q x block_k) keeping
//                    range(3) percent of the causal blocks. GFLOP/s counts the (row, key)
//                    pairs the layout and the causal mask let through, so it
//                    reads directly against dense_causal on the same shape:
//                    the executor is the flash body, and per visited key it
//                    should run at the same rate.
//   dense_causal     the same shape without a layout.
//   hip_estimate     hip_layout alone at n = range(0), hq 32, hkv 8, top_k 2048:
//                    its time at n and 2n shows the n * k * log(n / k) scaling.
//   hip_prefill      estimate + attention at n = range(0), hq 32, hkv 8 (GQA 4),
//                    HiP defaults; its GFLOP/s counts dense causal FLOPs, so its
//                    time reads directly against dense_causal_gqa4 on that shape.
//                    recall: the share of dense attention's softmax mass that
//                    the layout keeps, over 4 sample rows and every head.
//   routing_prefill  routing_attention at n = range(0), hq 32, hkv 8, causal,
//                    sqrt(n) clusters drawn from the queries (the paper's
//                    count; window n / clusters): routing and attention
//                    timed together; GFLOP/s and recall as hip_prefill's.
//   quest_decode     one decode row per query head over skv = range(0) keys, hq
//                    32, hkv 8, budget range(1) (0: dense decode), lists shared
//                    by range(2) query heads (1: per head, 4: per GQA group):
//                    the page bounds are kept on append, so a step is
//                    quest_layout + the attention call. GB/s counts the bytes a
//                    dense step reads; recall as hip_prefill's, every head. The
//                    inputs are random normal: attention is spread thin, so
//                    recall is close to the share of keys kept (structured
//                    inputs: examples/04_sparse.cpp, docs/llama2.md).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/sparse/hip.hpp"
#include "attnkit/attention/sparse/quest.hpp"
#include "attnkit/attention/sparse/routing.hpp"
#include "support/counters.hpp"
#include "support/sparse_layouts.hpp"
#include "support/workloads.hpp"

namespace attnkit::bench {
namespace {

using arch = native_arch;
using inputs = attention_inputs<float, half, half, float>;

problem square(std::int64_t n, std::int64_t hq, std::int64_t hkv) {
  problem p;
  p.hq = hq, p.hkv = hkv, p.sq = p.skv = n, p.d = p.dv = 128;
  return p;
}

attention_params causal() {
  attention_params params;
  params.causal = true;
  return params;
}

/// Runs args on a backend with its own workspace.
template <class Args>
void run_call(benchmark::State& state, const Args& a, double flops, double bytes, bool compute_bound) {
  cpu<arch> backend;
  std::vector<unsigned char> scratch(flash_attention_workspace_size(a, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  run_and_count(state, [&] { flash_attention(a, backend); }, flops, bytes, compute_bound, backend.exec.concurrency());
}

void sparse_executor(benchmark::State& state) {
  const problem p = square(state.range(0), 8, 2);
  const std::int64_t bq = state.range(1), bk = state.range(2);
  inputs in(p, 42);
  std::mt19937_64 rng(7);
  std::bernoulli_distribution keep(state.range(3) / 100.0);
  owned_layout l;
  l.shape.block_q = bq;
  l.shape.block_k = bk;
  l.b = 1, l.groups = p.hq, l.qblocks = (p.sq + bq - 1) / bq;
  const std::int64_t kblocks = (p.skv + bk - 1) / bk;
  std::vector<std::int64_t> lists(static_cast<std::size_t>(p.hq * l.qblocks * kblocks)), counts;
  double pairs = 0;  // visited (row, key) pairs
  for (std::int64_t item = 0; item < p.hq * l.qblocks; ++item) {
    const std::int64_t qb = item % l.qblocks, last_row = std::min(p.sq, (qb + 1) * bq) - 1;
    std::int64_t n = 0;
    for (std::int64_t kb = 0; kb * bk <= last_row; ++kb) {
      if (!keep(rng)) continue;
      lists[static_cast<std::size_t>(item * kblocks + n++)] = kb;
      for (std::int64_t i = qb * bq; i <= last_row; ++i)
        pairs += static_cast<double>(std::clamp<std::int64_t>(i + 1 - kb * bk, 0, bk));
    }
    counts.push_back(n);
  }
  l.set_lists(lists.data(), kblocks, counts.data());
  auto a = make_attention_args(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view);
  a.params = causal();
  a.sparse = l.view();
  run_call(state, a, 4.0 * p.d * pairs, kv_bytes(p, 2, 2), true);
  state.counters["visited"] = pairs / (p.hq * p.sq * (p.skv + 1) / 2.0);
}
BENCHMARK(sparse_executor)
    ->ArgsProduct({{4096}, {64}, {16, 64, 128}, {25}})
    ->Args({4096, 64, 128, 100})
    ->Args({4096, 128, 128, 25})
    ->ArgNames({"n", "bq", "bk", "keep%"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void dense_causal(benchmark::State& state) {
  const problem p = square(state.range(0), 8 * state.range(1), 2 * state.range(1));
  inputs in(p, 42);
  auto a = make_attention_args(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view);
  a.params = causal();
  run_call(state, a, attention_flops(p, true), kv_bytes(p, 2, 2), true);
}
BENCHMARK(dense_causal)->Args({4096, 1})->ArgNames({"n", "x4 heads"})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(dense_causal)
    ->Args({32768, 4})
    ->ArgNames({"n", "x4 heads"})
    ->Unit(benchmark::kSecond)
    ->UseRealTime()
    ->Iterations(1)
    ->Name("dense_causal_gqa4");

void hip_estimate(benchmark::State& state) {
  const problem p = square(state.range(0), 32, 8);
  inputs in(p, 42);
  auto a = make_attention_args(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view);
  a.params = causal();
  const cpu<arch> backend;
  for (auto _ : state) benchmark::DoNotOptimize(hip_layout(a, hip_options{}, backend).indices.data());
}
BENCHMARK(hip_estimate)->Arg(8192)->Arg(16384)->Arg(32768)->ArgName("n")->Unit(benchmark::kMillisecond)->UseRealTime();

void hip_prefill(benchmark::State& state) {
  const problem p = square(state.range(0), 32, 8);
  inputs in(p, 42);
  auto a = make_attention_args(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view);
  a.params = causal();
  cpu<arch> backend;
  run_and_count(
      state,
      [&] {
        const owned_layout l = hip_layout(a, hip_options{}, backend);
        auto s = a;
        s.sparse = l.view();
        flash_attention(s, backend);
      },
      attention_flops(p, true), kv_bytes(p, 2, 2), true, backend.exec.concurrency());
  const std::vector<std::int64_t> rows = {p.sq / 4, p.sq / 2, p.sq - 1000, p.sq - 1};
  state.counters["recall"] = mass_recall(hip_layout(a, hip_options{}, backend), p, in.q.cview(), in.k.cview(),
                                         in.v.cview(), rows);
}
BENCHMARK(hip_prefill)->Arg(32768)->ArgName("n")->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

void routing_prefill(benchmark::State& state) {
  const problem p = square(state.range(0), 32, 8);
  inputs in(p, 42);
  auto a = make_attention_args(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view);
  a.params = causal();
  const auto clusters = static_cast<std::int64_t>(std::lround(std::sqrt(static_cast<double>(p.sq))));
  routing_centroids mu(p.hq, clusters, p.d);
  std::mt19937_64 rng(11);
  std::uniform_int_distribution<std::int64_t> row(0, p.sq - 1);
  for (std::int64_t h = 0; h < p.hq; ++h)
    for (std::int64_t c = 0; c < clusters; ++c) mu.set(h, c, &in.q.view(0, h, row(rng), 0));
  cpu<arch> backend;
  run_and_count(
      state, [&] { routing_attention(a, mu, routing_options{}, backend); }, attention_flops(p, true),
      kv_bytes(p, 2, 2), true, backend.exec.concurrency());
  // Recall: the keys a sample row sees are those of every cluster that holds it.
  double mass = 0;
  const std::vector<std::int64_t> rows = {p.sq / 2, p.sq - 1};
  for (std::int64_t h = 0; h < p.hq; ++h) {
    const std::vector<routing_members> m = route(in.q.cview(), in.k.cview(), mu, 0, h, routing_options{}, backend);
    for (const std::int64_t i : rows) {
      tensor<float, 4> o({1, 1, 1, p.dv}), probs({1, 1, 1, i + 1});
      dense_attention(in.q.cview().slice(1, h, h + 1).slice(2, i, i + 1),
                      in.k.cview().slice(1, h / 4, h / 4 + 1).slice(2, 0, i + 1),
                      in.v.cview().slice(1, h / 4, h / 4 + 1).slice(2, 0, i + 1), o.view(), causal(), {}, probs.view());
      std::vector<char> seen(static_cast<std::size_t>(i + 1), 0);
      for (const routing_members& cm : m)
        if (std::binary_search(cm.queries.begin(), cm.queries.end(), i))
          for (const std::int64_t j : cm.keys)
            if (j <= i) seen[static_cast<std::size_t>(j)] = 1;
      for (std::int64_t j = 0; j <= i; ++j) mass += seen[static_cast<std::size_t>(j)] ? probs(0, 0, 0, j) : 0.0;
    }
  }
  state.counters["recall"] = mass / (p.hq * static_cast<double>(rows.size()));
}
BENCHMARK(routing_prefill)->Arg(32768)->ArgName("n")->Unit(benchmark::kSecond)->UseRealTime()->Iterations(1);

void quest_decode(benchmark::State& state) {
  problem p = square(1, 32, 8);
  p.skv = state.range(0);
  inputs in(p, 42);
  auto a = make_attention_args(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view);
  a.params = causal();
  cpu<arch> backend;
  const quest_bounds bounds = quest_page_bounds(a, 16);
  quest_options opt;
  opt.budget = state.range(1);
  opt.head_group = state.range(2);
  run_and_count(
      state,
      [&] {
        if (opt.budget == 0) return flash_attention(a, backend);
        const owned_layout l = quest_layout(a, bounds, opt, backend.exec);
        auto s = a;
        s.sparse = l.view();
        flash_attention(s, backend);
      },
      attention_flops(p, false), kv_bytes(p, 2, 2), false, backend.exec.concurrency());
  if (opt.budget > 0)
    state.counters["recall"] = mass_recall(quest_layout(a, bounds, opt, backend.exec), p, in.q.cview(), in.k.cview(),
                                           in.v.cview(), {0});
}
BENCHMARK(quest_decode)
    ->ArgsProduct({{32768}, {0, 2048}, {1, 4}})
    ->ArgNames({"skv", "budget", "head_group"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace attnkit::bench
