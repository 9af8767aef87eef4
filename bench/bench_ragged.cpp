// Continuous batching: one ragged flash_attention call over a paged cache for a
// batch of 63 decode rows and one 2048-row prefill chunk, against the same work
// as 64 per-sequence calls. cpu_native, all threads; f32 q and o,
// f16 K and V, hkv 8, hq 32, d 128, causal.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "support/counters.hpp"
#include "support/paged_copy.hpp"
#include "support/workloads.hpp"

namespace attnkit::bench {
namespace {

struct ragged_inputs {
  static constexpr std::int64_t hq = 32, hkv = 8, d = 128, decode_rows = 63, prefill = 2048;
  std::vector<std::int64_t> rows, lengths, cu;
  test::bhsd_tensor<float> q, o;
  test::bhsd_tensor<half> k;
  test::paged_copy<half> kp, vp;

  explicit ragged_inputs(std::int64_t keys)
      : rows(make_rows()),
        lengths(make_lengths(keys)),
        cu(prefix(rows)),
        q(1, hq, cu.back(), d, test::layout::bhsd),
        o(1, hq, cu.back(), d, test::layout::bhsd),
        k(decode_rows + 1, hkv, keys, d, test::layout::bhsd),
        kp(random_keys(k), lengths, 16, rng()),
        vp(random_keys(k), lengths, 16, rng()) {
    std::mt19937_64 g(7);
    test::fill_normal(q.storage.data(), q.storage.size(), g);
  }

  static std::mt19937_64& rng() {
    static std::mt19937_64 g(42);
    return g;
  }
  static std::vector<std::int64_t> make_rows() {
    std::vector<std::int64_t> r(decode_rows, 1);
    r.push_back(prefill);
    return r;
  }
  static std::vector<std::int64_t> make_lengths(std::int64_t keys) {
    std::vector<std::int64_t> l(decode_rows, keys);
    l.push_back(prefill);
    return l;
  }
  static std::vector<std::int64_t> prefix(const std::vector<std::int64_t>& r) {
    std::vector<std::int64_t> c = {0};
    for (std::int64_t x : r) c.push_back(c.back() + x);
    return c;
  }
  static tensor_view<const half, 4> random_keys(test::bhsd_tensor<half>& t) {
    test::fill_normal(t.storage.data(), t.storage.size(), rng());
    return t.cview();
  }

  double flops() const {
    double f = 0;
    for (std::size_t b = 0; b < rows.size(); ++b) f += 4.0 * hq * rows[b] * lengths[b] * d;
    return f - 2.0 * hq * prefill * prefill * d;  // the prefill chunk is causal: half its square
  }
};

// range(0): keys per decode sequence; range(1): 0 = one ragged call, 1 = one call per sequence.
void flash_ragged(benchmark::State& state) {
  ragged_inputs in(state.range(0));
  cpu_native backend;
  attention_params params;
  params.causal = true;
  auto args = make_attention_args(in.q.cview(), in.kp.view, in.vp.view, in.o.view);
  args.params = params;
  args.cu_seqlens_q = tensor_view<const std::int64_t, 1>(in.cu.data(), {static_cast<std::int64_t>(in.cu.size())});
  std::vector<unsigned char> scratch(flash_attention_workspace_size(args, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  // The per-sequence calls: sequence b's rows and a one-sequence table over its pages.
  const std::size_t n = in.rows.size();
  std::vector<std::int32_t> indptr(2 * n);
  std::vector<attention_args<const float, const half, const half, float>> each;
  std::size_t most = 0;
  for (std::size_t b = 0; b < n; ++b) {
    auto a = args;
    a.cu_seqlens_q = {};
    a.q = tensor_view<const float, 4>(&in.q.view(0, 0, in.cu[b], 0), {1, in.hq, in.rows[b], in.d}, in.q.view.strides());
    a.o = tensor_view<float, 4>(&in.o.view(0, 0, in.cu[b], 0), {1, in.hq, in.rows[b], in.d}, in.o.view.strides());
    const block_table& t = in.kp.view.table;
    indptr[2 * b + 1] = t.indptr(b + 1) - t.indptr(b);
    for (auto* kv : {&a.k.paged, &a.v.paged}) {
      kv->table.indptr = tensor_view<const std::int32_t, 1>(&indptr[2 * b], {2});
      kv->table.indices = tensor_view<const std::int32_t, 1>(&t.indices(t.indptr(b)), {indptr[2 * b + 1]});
      kv->table.last_page_len = tensor_view<const std::int32_t, 1>(&t.last_page_len(b), {1});
    }
    most = std::max(most, flash_attention_workspace_size(a, backend));
    each.push_back(a);
  }
  const bool per_sequence = state.range(1) != 0;
  std::vector<unsigned char> own(most);
  cpu_native one;
  one.scratch = {own.data(), own.size()};
  run_and_count(
      state,
      [&] {
        if (!per_sequence) return flash_attention(args, backend);
        for (const auto& a : each) flash_attention(a, one);
      },
      in.flops(), 0.0, true, backend.exec.concurrency());
}
BENCHMARK(flash_ragged)
    ->ArgsProduct({{2048}, {0, 1}})
    ->ArgNames({"decode_keys", "per_sequence"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace attnkit::bench
