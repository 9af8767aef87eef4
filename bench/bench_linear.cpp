// linear_attention on cpu_native, all threads, caller workspace:
// chunkwise prefill (Lightning: a decay per head; GLA: per channel) against the
// FMA peak, BASED's layer likewise, the decode step's state traffic against DRAM
// bandwidth at short and long contexts, and causal flash prefill on the same shape
// for the crossover.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/linear/based.hpp"
#include "attnkit/attention/linear/gla.hpp"
#include "attnkit/attention/linear/lightning.hpp"
#include "attnkit/attention/linear/varlen.hpp"
#include "support/counters.hpp"
#include "support/linear_inputs.hpp"

namespace attnkit::bench {
namespace {

using arch = native_arch;
constexpr std::int64_t heads = 8, dim = 128, chunk = 64;

enum variant : std::int64_t { lightning = 0, gla = 1 };

/// Lightning's decay (fla's rule, layer 0 of 2) or GLA's gates, as a linear_decay over in.
linear_decay decay_of(variant which, const test::linear_inputs& in, const std::vector<float>& log_lambda) {
  linear_decay d;
  if (which == lightning) d.per_head = tensor_view<const float, 1>(log_lambda.data(), {heads});
  if (which == gla) d.per_channel = in.g_channel.cview();
  return d;
}

/// Per token and head: 4KV (state read and update) + 2C(K+V) (the chunk's masked product).
double linear_prefill_flops(std::int64_t t) { return double(heads) * t * (4.0 * dim * dim + 2.0 * chunk * 2 * dim); }

// Prefill of t = range(0) tokens, b 1, 8 heads, K = V = 128, chunk 64, variant range(1).
void linear_prefill(benchmark::State& state) {
  const std::int64_t t = state.range(0);
  const auto which = static_cast<variant>(state.range(1));
  std::mt19937_64 rng(42);
  const test::linear_inputs in(1, heads, t, dim, dim, rng);
  const std::vector<float> log_lambda = lightning_log_decay_fla(heads, 0, 2);
  tensor<float, 4> o({1, heads, t, dim});
  linear_params p;
  p.chunk = chunk;
  cpu<arch> backend;
  std::vector<unsigned char> scratch(linear_attention_workspace_size(dim, dim, p, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  const linear_decay d = decay_of(which, in, log_lambda);
  run_and_count(
      state, [&] { linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), d, {}, p, backend); },
      linear_prefill_flops(t), 0, true, backend.exec.concurrency());
}
BENCHMARK(linear_prefill)
    ->ArgsProduct({{16384}, {lightning, gla}})
    ->ArgsProduct({{32, 64, 128, 256, 512, 1024, 2048, 8192}, {lightning}})
    ->ArgNames({"t", "gla"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// BASED's layer at t = 16384, 8 heads, d 16 (153 symmetric Taylor features), V 64,
// chunk 64. FLOPs per token and head: 4 D' V (state read and update) + 2C(d + V)
// (the chunk's product over d, then over V).
void based_prefill(benchmark::State& state) {
  constexpr std::int64_t t = 16384, d = 16, V = 64;
  std::mt19937_64 rng(42);
  const test::linear_inputs in(1, heads, t, d, V, rng);
  tensor<float, 4> o({1, heads, t, V});
  based_params p;
  cpu<arch> backend;
  std::vector<unsigned char> scratch(based_attention_workspace_size(d, V, p, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  const double D = double(taylor_features(p.map, d));
  run_and_count(
      state, [&] { based_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), {}, p, backend); },
      double(heads) * t * (4.0 * D * V + 2.0 * p.chunk * (d + V)), 0, true, backend.exec.concurrency());
}
BENCHMARK(based_prefill)->Unit(benchmark::kMillisecond)->UseRealTime();

// One decode step after a prefill of range(0) tokens (GLA gates): reads and writes the
// fp32 state, 8 K V bytes per head; peak_frac is that traffic over DRAM read bandwidth
// (the 8 heads' 512 KiB of state stay in L2, so it can exceed 1), l2_frac over L2's.
void linear_decode(benchmark::State& state) {
  const std::int64_t context = state.range(0);
  std::mt19937_64 rng(42);
  const test::linear_inputs in(1, heads, context + 1, dim, dim, rng);
  tensor<float, 4> o({1, heads, context + 1, dim}), st({1, heads, dim, dim});
  std::fill(st.data(), st.data() + st.size(), 0.0f);
  cpu<arch> backend;
  linear_decay prefill;
  prefill.per_channel = in.g_channel.cview().slice(2, 0, context);
  const auto rows = [&](const tensor<float, 4>& x, std::int64_t t0, std::int64_t t1) { return x.cview().slice(2, t0, t1); };
  linear_attention(rows(in.q, 0, context), rows(in.k, 0, context), rows(in.v, 0, context),
                   o.view().slice(2, 0, context), prefill, {st.view(), {}}, {}, backend);
  linear_decay step;
  step.per_channel = in.g_channel.cview().slice(2, context, context + 1);
  std::vector<unsigned char> scratch(linear_attention_workspace_size(dim, dim, {}, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  run_and_count(
      state,
      [&] {
        linear_attention(rows(in.q, context, context + 1), rows(in.k, context, context + 1),
                         rows(in.v, context, context + 1), o.view().slice(2, context, context + 1), step,
                         {st.view(), {}}, {}, backend);
      },
      5.0 * heads * dim * dim, 8.0 * heads * dim * dim, false, backend.exec.concurrency());
  state.counters["l2_frac"] = state.counters["GB/s"] / machine().all_threads.l2_read_gbps;
}
BENCHMARK(linear_decode)->Arg(1024)->Arg(65536)->ArgNames({"context"})->Unit(benchmark::kMicrosecond)->UseRealTime();

// A continuous-batching decode step: range(0) sequences of one token each, 2 heads,
// K = V = 128, GLA gates, one state slot per sequence. packed = 1 is one varlen
// call, its (sequence, head) items spread over the threads; packed = 0 loops
// per-sequence calls, each parallel over its 2 heads only. GB/s: state traffic.
void linear_varlen_decode(benchmark::State& state) {
  const std::int64_t n = state.range(0), h = 2;
  const bool packed = state.range(1) != 0;
  std::mt19937_64 rng(42);
  const test::linear_inputs in(1, h, n, dim, dim, rng);
  tensor<float, 4> o({1, h, n, dim}), st = test::random_state(n, h, dim, dim, rng);
  std::vector<std::int64_t> cu(static_cast<std::size_t>(n + 1));
  for (std::int64_t i = 0; i <= n; ++i) cu[static_cast<std::size_t>(i)] = i;
  linear_decay d;
  d.per_channel = in.g_channel.cview();
  cpu<arch> backend;
  std::vector<unsigned char> scratch(linear_attention_workspace_size(dim, dim, {}, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  const auto step = [&] {
    if (packed) {
      linear_attention_varlen(in.q.cview(), in.k.cview(), in.v.cview(), o.view(),
                              tensor_view<const std::int64_t, 1>(cu.data(), {n + 1}), d, {st.view(), {}}, {}, backend);
      return;
    }
    for (std::int64_t i = 0; i < n; ++i) {
      linear_decay di = d;
      di.per_channel = d.per_channel.slice(2, i, i + 1);
      linear_attention(in.q.cview().slice(2, i, i + 1), in.k.cview().slice(2, i, i + 1),
                       in.v.cview().slice(2, i, i + 1), o.view().slice(2, i, i + 1), di,
                       {st.view().slice(0, i, i + 1), {}}, {}, backend);
    }
  };
  run_and_count(state, step, 5.0 * n * h * dim * dim, 8.0 * n * h * dim * dim, false, backend.exec.concurrency());
}
BENCHMARK(linear_varlen_decode)
    ->ArgsProduct({{64}, {0, 1}})
    ->ArgNames({"sequences", "packed"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Causal flash prefill on the same shape (8 heads, d 128, sq = skv = 2^range(0)): where linear wins.
void flash_prefill_same_shape(benchmark::State& state) {
  const std::int64_t t = std::int64_t{1} << state.range(0);
  std::mt19937_64 rng(42);
  const test::linear_inputs in(1, heads, t, dim, dim, rng);
  tensor<float, 4> o({1, heads, t, dim});
  attention_params params;
  params.causal = true;
  cpu<arch> backend;
  std::vector<unsigned char> scratch(flash_attention_workspace_size(in.q.cview(), in.k.cview(), in.v.cview(), backend));
  backend.scratch = {scratch.data(), scratch.size()};
  run_and_count(
      state, [&] { flash_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), params, {}, backend); },
      2.0 * heads * double(t) * t * dim, 0, true, backend.exec.concurrency());
}
BENCHMARK(flash_prefill_same_shape)
    ->DenseRange(5, 13, 1)  // log2 t
    ->ArgNames({"log2_t"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace attnkit::bench
