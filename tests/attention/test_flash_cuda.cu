// The cuda backend against the fp64 oracle: prefill and decode, f16 and bf16,
// awkward sizes, every mask, GQA, paged K/V with pages out of order, ragged
// batches. Outputs start poisoned (NaN), so an unwritten element fails. Every
// test skips, saying so, when no CUDA device is present.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "attnkit/attention/flash_cuda.cuh"
#include "attnkit/core/tensor.hpp"
#include "support/compare.hpp"
#include "support/reference_attention.hpp"
#include "support/seeded.hpp"
#include "support/sparse_layout.hpp"

namespace attnkit::test {
namespace {

bool gpu_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define REQUIRE_GPU() \
  if (!gpu_present()) GTEST_SKIP() << "no CUDA device: the cuda backend's tests need a GPU"

/// Device memory holding a copy of host elements.
template <class T>
struct device_copy {
  T* p = nullptr;
  std::size_t n = 0;
  explicit device_copy(const T* host, std::size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(&p, std::max<std::size_t>(n, 1) * sizeof(T)), cudaSuccess);
    if (n) EXPECT_EQ(cudaMemcpy(p, host, n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  explicit device_copy(const std::vector<T>& host) : device_copy(host.data(), host.size()) {}
  device_copy(const device_copy&) = delete;
  ~device_copy() { cudaFree(p); }
  std::vector<T> read() const {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

struct cuda_case {
  std::int64_t b = 1, hq = 1, hkv = 1, sq = 1, skv = 1, d = 64, dv = 64;
  attention_params params;  // per-head arrays filled by the runner when asked
  bool alibi = false, sink_logits = false;
  std::int64_t page_size = 0;  // > 0: paged K/V, pages shuffled
  bool bitmask = false;        // a random per-head custom_mask
  bool sparse = false;         // a random block-sparse layout, one list per head
  int weights = 0;             // key weights: 0 none, 1 per query head, 2 per KV head (with row weights)
  bool lse = true;             // ask for lse (without it, key weights take theirs from the workspace)
};

/// Key weights (b, heads, skv) against the oracle's probabilities:
/// sum over the heads of each out head and the rows of row_weight * p.
void expect_key_weights(const std::vector<float>& got, const reference_result& ref,
                        const std::vector<float>& row_weights, std::int64_t heads, double tol) {
  const std::int64_t per = ref.hq / heads;
  double diff2 = 0, ref2 = 0, worst = 0, top = 0;
  bool finite = true;
  for (std::int64_t b = 0; b < ref.b; ++b)
    for (std::int64_t w = 0; w < heads; ++w)
      for (std::int64_t j = 0; j < ref.skv; ++j) {
        double want = 0;
        for (std::int64_t h = w * per; h < (w + 1) * per; ++h)
          for (std::int64_t i = 0; i < ref.sq; ++i) want += row_weights[i] * ref.prob(b, h, i, j);
        const double x = got[(b * heads + w) * ref.skv + j];
        finite = finite && std::isfinite(x);
        diff2 += (x - want) * (x - want), ref2 += want * want;
        worst = std::max(worst, std::abs(x - want)), top = std::max(top, std::abs(want));
      }
  EXPECT_TRUE(finite) << "key weights hold a NaN or inf (an unwritten element?)";
  EXPECT_LE(std::sqrt(diff2), tol * std::sqrt(ref2)) << "key weights, relative L2";
  EXPECT_LE(worst, tol * std::max(top, 1e-30)) << "key weights, max abs";
}

template <class T, class TO>
void run_case(const cuda_case& c, double tol) {
  seeded_rng s;
  tensor<T, 4> q({c.b, c.hq, c.sq, c.d}), k({c.b, c.hkv, c.skv, c.d}), v({c.b, c.hkv, c.skv, c.dv});
  fill_normal(q.data(), q.size(), s.rng);
  fill_normal(k.data(), k.size(), s.rng);
  fill_normal(v.data(), v.size(), s.rng);
  std::vector<float> slopes(c.hq), sinks(c.hq);
  std::uniform_real_distribution<float> u(0.01f, 0.5f);
  for (auto& x : slopes) x = u(s.rng);
  for (auto& x : sinks) x = 4.0f * u(s.rng) - 1.0f;
  attention_params host = c.params, dev = c.params;
  device_copy<float> d_slopes(slopes), d_sinks(sinks);
  if (c.alibi) {
    host.alibi_slopes = tensor_view<const float, 1>(slopes.data(), {c.hq});
    dev.alibi_slopes = tensor_view<const float, 1>(d_slopes.p, {c.hq});
  }
  if (c.sink_logits) {
    host.sink_logits = tensor_view<const float, 1>(sinks.data(), {c.hq});
    dev.sink_logits = tensor_view<const float, 1>(d_sinks.p, {c.hq});
  }
  // The caller's bitmask and the layout, for the kernel (device copies) and the oracle.
  const std::int64_t row_bytes = (c.skv + 7) / 8;
  std::vector<std::uint8_t> bits(c.bitmask ? c.hq * c.b * c.sq * row_bytes : 0);
  for (auto& x : bits) x = static_cast<std::uint8_t>(s.rng() | s.rng());  // about 3/4 of the keys
  layout_lists lists(c.b, c.hq, (c.sq + 31) / 32);
  lists.block_q = 32, lists.block_k = 48, lists.sinks = 3, lists.window = 20;
  if (c.sparse)
    for (auto& l : lists.lists)
      for (std::int64_t kb = 0; kb * 48 < c.skv; ++kb)
        if (s.rng() % 3 == 0) l.push_back(kb);
  const block_sparse_layout layout = lists.view();
  oracle_options opt;
  opt.allowed = [&](std::int64_t bi, std::int64_t h, std::int64_t i, std::int64_t j) {
    const std::int64_t row = bi * c.sq + i, p = c.skv - c.sq + i;
    const bool bit = !c.bitmask || ((bits[(h * c.b * c.sq + row) * row_bytes + j / 8] >> (j % 8)) & 1);
    return bit && (!c.sparse || lists.sees(bi, h, i, j, p, j));
  };
  const reference_result ref = reference_attention(q.cview(), k.cview(), v.cview(), host, opt);
  device_copy<std::uint8_t> d_bits(bits);
  device_copy<std::int64_t> d_indptr64(lists.indptr), d_ids(lists.indices);

  device_copy<T> dq(q.data(), q.size());
  const std::int64_t o_size = c.b * c.hq * c.sq * c.dv, lse_size = c.b * c.hq * c.sq;
  std::vector<TO> poison(o_size, from_float<TO>(std::numeric_limits<float>::quiet_NaN()));
  std::vector<float> lse_poison(lse_size, std::numeric_limits<float>::quiet_NaN());
  device_copy<TO> d_o(poison);
  device_copy<float> d_lse(lse_poison);
  auto args = make_attention_args(tensor_view<const T, 4>(dq.p, {c.b, c.hq, c.sq, c.d}),
                                  tensor_view<const T, 4>(), tensor_view<const T, 4>(),
                                  tensor_view<TO, 4>(d_o.p, {c.b, c.hq, c.sq, c.dv}));
  args.params = dev;
  if (c.lse) args.lse = tensor_view<float, 3>(d_lse.p, {c.b, c.hq, c.sq});
  const std::int64_t w_heads = c.weights == 2 ? c.hkv : c.hq;
  std::vector<float> row_weights(c.sq);
  for (auto& x : row_weights) x = u(s.rng) * 2.0f;
  device_copy<float> d_row_weights(row_weights);
  device_copy<float> d_weights(std::vector<float>(c.b * w_heads * c.skv, std::numeric_limits<float>::quiet_NaN()));
  if (c.weights) {
    args.kw.out = tensor_view<float, 3>(d_weights.p, {c.b, w_heads, c.skv});
    args.kw.row_weights = tensor_view<const float, 1>(d_row_weights.p, {c.sq});
  }

  // K/V: strided copies, or pages of the pool in a shuffled order.
  std::vector<T> k_rows, v_rows;
  std::vector<std::int32_t> indptr{0}, indices, last;
  std::int64_t pages = 0;
  if (c.page_size > 0) {
    const std::int64_t per_seq = (c.skv + c.page_size - 1) / c.page_size;
    pages = c.b * per_seq;
    std::vector<std::int32_t> order(pages);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), s.rng);
    k_rows.assign(pages * c.hkv * c.page_size * c.d, from_float<T>(0.0f));
    v_rows.assign(pages * c.hkv * c.page_size * c.dv, from_float<T>(0.0f));
    for (std::int64_t bi = 0; bi < c.b; ++bi) {
      for (std::int64_t x = 0; x < per_seq; ++x) indices.push_back(order[bi * per_seq + x]);
      indptr.push_back(static_cast<std::int32_t>(indices.size()));
      last.push_back(static_cast<std::int32_t>(c.skv - (per_seq - 1) * c.page_size));
      for (std::int64_t h = 0; h < c.hkv; ++h)
        for (std::int64_t j = 0; j < c.skv; ++j) {
          const std::int64_t page = order[bi * per_seq + j / c.page_size], slot = j % c.page_size;
          for (std::int64_t x = 0; x < c.d; ++x)
            k_rows[((page * c.hkv + h) * c.page_size + slot) * c.d + x] = k.view()(bi, h, j, x);
          for (std::int64_t x = 0; x < c.dv; ++x)
            v_rows[((page * c.hkv + h) * c.page_size + slot) * c.dv + x] = v.view()(bi, h, j, x);
        }
    }
  } else {
    k_rows.assign(k.data(), k.data() + k.size());
    v_rows.assign(v.data(), v.data() + v.size());
  }
  device_copy<T> dk(k_rows), dv(v_rows);
  device_copy<std::int32_t> d_indptr(indptr), d_indices(indices), d_last(last);
  if (c.page_size > 0) {
    block_table t{tensor_view<const std::int32_t, 1>(d_indptr.p, {c.b + 1}),
                  tensor_view<const std::int32_t, 1>(d_indices.p, {static_cast<std::int64_t>(indices.size())}),
                  tensor_view<const std::int32_t, 1>(d_last.p, {c.b})};
    args.k = paged_kv<const T>{tensor_view<const T, 4>(dk.p, {pages, c.hkv, c.page_size, c.d}), t};
    args.v = paged_kv<const T>{tensor_view<const T, 4>(dv.p, {pages, c.hkv, c.page_size, c.dv}), t};
  } else {
    args.k = tensor_view<const T, 4>(dk.p, {c.b, c.hkv, c.skv, c.d});
    args.v = tensor_view<const T, 4>(dv.p, {c.b, c.hkv, c.skv, c.dv});
  }

  if (c.bitmask) args.mask.bits = tensor_view<const std::uint8_t, 3>(d_bits.p, {c.hq, c.b * c.sq, row_bytes});
  if (c.sparse) {
    args.sparse = layout;
    args.sparse.indptr = tensor_view<const std::int64_t, 3>(d_indptr64.p, layout.indptr.extents());
    args.sparse.indices = tensor_view<const std::int64_t, 1>(d_ids.p, layout.indices.extents());
  }
  const std::size_t bytes = flash_attention_workspace_size(args, cuda{});
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&ws, std::max<std::size_t>(bytes, 1)), cudaSuccess);
  flash_attention(args, cuda{nullptr, workspace{ws, bytes}});
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaFree(ws);

  tensor<TO, 4> o({c.b, c.hq, c.sq, c.dv});
  const std::vector<TO> o_host = d_o.read();
  std::copy(o_host.begin(), o_host.end(), o.data());
  const error_stats e = compare_output(o.view(), ref);
  EXPECT_TRUE(e.within(tol)) << "rel " << e.rel_l2 << " max_abs " << e.max_abs << " ref_max " << e.ref_max
                             << " finite " << e.finite;
  if (c.weights) expect_key_weights(d_weights.read(), ref, row_weights, w_heads, tol);
  if (!c.lse) return;
  const std::vector<float> lse = d_lse.read();
  for (std::int64_t x = 0; x < lse_size; ++x) {
    const double want = ref.lse[x];
    if (std::isinf(want)) {
      EXPECT_TRUE(std::isinf(lse[x]) && lse[x] < 0) << "row " << x << " lse " << lse[x];
    } else {
      EXPECT_NEAR(lse[x], want, 1e-3 * std::max(1.0, std::abs(want))) << "row " << x;
    }
  }
}

constexpr double f16_tol = 2e-3, bf16_tol = 1e-2;

// One small call of each kernel (prefill; decode splits and their merge):
// what scripts/gpu_check.sh runs under compute-sanitizer.
TEST(FlashCuda, SmallCaseOfEachKernel) {
  REQUIRE_GPU();
  cuda_case prefill;
  prefill.hq = 2, prefill.hkv = 1, prefill.sq = 7, prefill.skv = 70, prefill.d = prefill.dv = 64;
  prefill.params.causal = true;
  run_case<half, half>(prefill, f16_tol);
  cuda_case decode = prefill;
  decode.hq = 4, decode.sq = 1, decode.skv = 1000;
  run_case<bfloat16, float>(decode, bf16_tol);
}

TEST(FlashCuda, PrefillSizesAndHeadDims) {
  REQUIRE_GPU();
  for (const auto [sq, skv] : {std::pair{1, 1}, {7, 127}, {127, 1000}, {200, 77}})
    for (const std::int64_t d : {64, 80, 128, 256}) {
      cuda_case c;
      c.b = 2, c.hq = 4, c.hkv = 2, c.sq = sq, c.skv = skv, c.d = c.dv = d;
      SCOPED_TRACE(testing::Message() << "sq " << sq << " skv " << skv << " d " << d);
      run_case<half, half>(c, f16_tol);
      run_case<bfloat16, float>(c, bf16_tol);
    }
}

TEST(FlashCuda, EveryMask) {
  REQUIRE_GPU();
  for (int mask = 0; mask < 5; ++mask) {
    cuda_case c;
    c.b = 2, c.hq = 8, c.hkv = 2, c.sq = 130, c.skv = 300, c.d = c.dv = 128;
    c.params.causal = mask == 1 || mask == 3;
    if (mask == 2) c.params.window_left = 40, c.params.window_right = 7, c.params.sinks = 5;
    if (mask == 3) c.params.softcap = 8.0f, c.alibi = true, c.sink_logits = true;
    if (mask == 4) c.params.window_left = 0, c.params.causal = true;  // the diagonal alone
    SCOPED_TRACE(testing::Message() << "mask " << mask);
    run_case<half, half>(c, f16_tol);
    run_case<bfloat16, bfloat16>(c, bf16_tol);
  }
}

TEST(FlashCuda, BitmaskAndBlockSparse) {
  REQUIRE_GPU();
  for (int form = 0; form < 3; ++form)
    for (const std::int64_t sq : {1, 100}) {
      cuda_case c;
      c.b = 2, c.hq = 4, c.hkv = 2, c.sq = sq, c.skv = 500, c.d = c.dv = 64;
      c.params.causal = true;
      c.bitmask = form != 1;
      c.sparse = form != 0;
      SCOPED_TRACE(testing::Message() << "form " << form << " sq " << sq);
      run_case<half, half>(c, f16_tol);
    }
}

TEST(FlashCuda, DecodeGroupsAndSplits) {
  REQUIRE_GPU();
  for (const std::int64_t group : {1, 4, 8})
    for (const std::int64_t sq : {1, 2})
      for (const std::int64_t skv : {1, 1000, 5000}) {
        if (group * sq > 16) continue;
        cuda_case c;
        c.b = 3, c.hkv = 2, c.hq = 2 * group, c.sq = sq, c.skv = skv, c.d = c.dv = 128;
        c.params.causal = true;
        c.sink_logits = skv == 1000;
        SCOPED_TRACE(testing::Message() << "group " << group << " sq " << sq << " skv " << skv);
        run_case<half, half>(c, f16_tol);
      }
}

// The eviction signal: per query head and per KV head, with row weights, in
// prefill (causal, sink logits: part of lse) and in decode, with the call's
// lse and with the workspace's.
TEST(FlashCuda, KeyWeights) {
  REQUIRE_GPU();
  for (const std::int64_t sq : {1, 90})
    for (int weights = 1; weights <= 2; ++weights) {
      cuda_case c;
      c.b = 2, c.hq = 8, c.hkv = 2, c.sq = sq, c.skv = 333, c.d = c.dv = 64;
      c.params.causal = true;
      c.sink_logits = true;
      c.weights = weights;
      c.lse = weights == 1;
      SCOPED_TRACE(testing::Message() << "sq " << sq << " weights " << weights);
      run_case<half, float>(c, f16_tol);
    }
}

TEST(FlashCuda, PagedOutOfOrder) {
  REQUIRE_GPU();
  for (const std::int64_t sq : {1, 37}) {
    cuda_case c;
    c.b = 3, c.hq = 4, c.hkv = 1, c.sq = sq, c.skv = 333, c.d = c.dv = 64, c.page_size = 16;
    c.params.causal = true;
    SCOPED_TRACE(testing::Message() << "sq " << sq);
    run_case<half, float>(c, f16_tol);
  }
}

// Plan once, run many times: a decode call captured in a CUDA graph and
// replayed gives the direct call's output bit for bit (the split merge has a
// fixed order), through the positional front.
TEST(FlashCuda, GraphReplayMatchesDirectCall) {
  REQUIRE_GPU();
  seeded_rng s;
  const std::int64_t b = 2, hq = 8, hkv = 2, skv = 3000, d = 128;
  tensor<half, 4> q({b, hq, 1, d}), k({b, hkv, skv, d}), v({b, hkv, skv, d});
  fill_normal(q.data(), q.size(), s.rng);
  fill_normal(k.data(), k.size(), s.rng);
  fill_normal(v.data(), v.size(), s.rng);
  device_copy<half> dq(q.data(), q.size()), dk(k.data(), k.size()), dv(v.data(), v.size());
  device_copy<half> direct(std::vector<half>(b * hq * d)), replayed(std::vector<half>(b * hq * d));
  const tensor_view<const half, 4> qv(dq.p, {b, hq, 1, d}), kv(dk.p, {b, hkv, skv, d}), vv(dv.p, {b, hkv, skv, d});
  const std::size_t bytes = flash_attention_workspace_size(qv, kv, vv, cuda{});
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&ws, bytes), cudaSuccess);
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  attention_params p;
  const cuda backend{stream, workspace{ws, bytes}};
  flash_attention(qv, kv, vv, tensor_view<half, 4>(direct.p, {b, hq, 1, d}), p, {}, backend);
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  flash_attention(qv, kv, vv, tensor_view<half, 4>(replayed.p, {b, hq, 1, d}), p, {}, backend);
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int r = 0; r < 3; ++r) ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  const std::vector<half> x = direct.read(), y = replayed.read();
  for (std::size_t i = 0; i < x.size(); ++i) ASSERT_EQ(x[i].bits, y[i].bits) << "element " << i;
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  cudaFree(ws);
}

// A ragged batch over a paged cache: a prefill chunk, a longer one and a
// decode step in one call, each sequence with its own key count; each
// sequence is checked against the oracle run on it alone.
TEST(FlashCuda, RaggedBatchOverPages) {
  REQUIRE_GPU();
  seeded_rng s;
  const std::int64_t hq = 4, hkv = 2, d = 128, ps = 32;
  const std::vector<std::int64_t> rows{5, 67, 1}, keys{150, 70, 300};
  const std::int64_t count = 3, total = 73;
  std::vector<std::int64_t> cu{0};
  for (const auto n : rows) cu.push_back(cu.back() + n);
  tensor<bfloat16, 4> q({1, hq, total, d});
  fill_normal(q.data(), q.size(), s.rng);
  std::vector<tensor<bfloat16, 4>> k, v;
  std::vector<std::int32_t> indptr{0}, indices, last;
  std::int64_t pages = 0;
  for (std::int64_t b = 0; b < count; ++b) {
    k.emplace_back(tensor<bfloat16, 4>::extents_type{1, hkv, keys[b], d});
    v.emplace_back(tensor<bfloat16, 4>::extents_type{1, hkv, keys[b], d});
    fill_normal(k[b].data(), k[b].size(), s.rng);
    fill_normal(v[b].data(), v[b].size(), s.rng);
    const std::int64_t n = (keys[b] + ps - 1) / ps;
    for (std::int64_t x = 0; x < n; ++x) indices.push_back(static_cast<std::int32_t>(pages + n - 1 - x));  // reversed
    pages += n;
    indptr.push_back(static_cast<std::int32_t>(indices.size()));
    last.push_back(static_cast<std::int32_t>(keys[b] - (n - 1) * ps));
  }
  std::vector<bfloat16> k_pool(pages * hkv * ps * d, from_float<bfloat16>(0.0f)), v_pool = k_pool;
  for (std::int64_t b = 0; b < count; ++b)
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t j = 0; j < keys[b]; ++j) {
        const std::int64_t page = indices[indptr[b] + j / ps];
        for (std::int64_t x = 0; x < d; ++x) {
          k_pool[((page * hkv + h) * ps + j % ps) * d + x] = k[b].view()(0, h, j, x);
          v_pool[((page * hkv + h) * ps + j % ps) * d + x] = v[b].view()(0, h, j, x);
        }
      }
  device_copy<bfloat16> dq(q.data(), q.size()), dk(k_pool), dv(v_pool);
  device_copy<std::int32_t> d_indptr(indptr), d_indices(indices), d_last(last);
  device_copy<std::int64_t> d_cu(cu);
  device_copy<float> d_o(std::vector<float>(hq * total * d, std::numeric_limits<float>::quiet_NaN()));
  device_copy<float> d_lse(std::vector<float>(hq * total, std::numeric_limits<float>::quiet_NaN()));
  const block_table table{tensor_view<const std::int32_t, 1>(d_indptr.p, {count + 1}),
                          tensor_view<const std::int32_t, 1>(d_indices.p, {static_cast<std::int64_t>(indices.size())}),
                          tensor_view<const std::int32_t, 1>(d_last.p, {count})};
  auto args = make_attention_args(tensor_view<const bfloat16, 4>(dq.p, {1, hq, total, d}),
                                  paged_kv<const bfloat16>{tensor_view<const bfloat16, 4>(dk.p, {pages, hkv, ps, d}), table},
                                  paged_kv<const bfloat16>{tensor_view<const bfloat16, 4>(dv.p, {pages, hkv, ps, d}), table},
                                  tensor_view<float, 4>(d_o.p, {1, hq, total, d}));
  args.params.causal = true;
  args.lse = tensor_view<float, 3>(d_lse.p, {1, hq, total});
  args.cu_seqlens_q = tensor_view<const std::int64_t, 1>(d_cu.p, {count + 1});
  ASSERT_EQ(flash_attention_workspace_size(args, cuda{}), 0u);  // ragged calls run the prefill schedule
  flash_attention(args, cuda{});
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<float> o = d_o.read(), lse = d_lse.read();
  for (std::int64_t b = 0; b < count; ++b) {
    SCOPED_TRACE(testing::Message() << "sequence " << b);
    tensor<bfloat16, 4> qb({1, hq, rows[b], d});
    tensor<float, 4> ob({1, hq, rows[b], d});
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t i = 0; i < rows[b]; ++i)
        for (std::int64_t x = 0; x < d; ++x) {
          qb.view()(0, h, i, x) = q.view()(0, h, cu[b] + i, x);
          ob.view()(0, h, i, x) = o[(h * total + cu[b] + i) * d + x];
        }
    attention_params p;
    p.causal = true;
    const reference_result ref = reference_attention(qb.cview(), k[b].cview(), v[b].cview(), p);
    const error_stats e = compare_output(ob.view(), ref);
    EXPECT_TRUE(e.within(bf16_tol)) << "rel " << e.rel_l2 << " max_abs " << e.max_abs << " finite " << e.finite;
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t i = 0; i < rows[b]; ++i)
        EXPECT_NEAR(lse[h * total + cu[b] + i], ref.row_lse(0, h, i), 1e-3 * std::max(1.0, std::abs(ref.row_lse(0, h, i)))) << "head " << h << " row " << i;
  }
}

TEST(FlashCuda, RejectsWhatItCannotRun) {
  // Host checks and plans: they need no GPU (nothing here reaches a kernel).
  std::vector<half> buf(8 * 72);
  auto q = tensor_view<const half, 4>(buf.data(), {1, 1, 8, 72});  // d 72: fine
  auto k = tensor_view<const half, 4>(buf.data(), {1, 1, 8, 72});
  auto o = tensor_view<half, 4>(buf.data(), {1, 1, 8, 72});
  auto args = make_attention_args(q, k, k, o);
  EXPECT_NO_THROW((void)flash_attention_workspace_size(args, cuda{}));
  auto bad = make_attention_args(tensor_view<const half, 4>(buf.data(), {1, 1, 4, 12}),
                                 tensor_view<const half, 4>(buf.data(), {1, 1, 4, 12}),
                                 tensor_view<const half, 4>(buf.data(), {1, 1, 4, 12}),
                                 tensor_view<half, 4>(buf.data(), {1, 1, 4, 12}));
  EXPECT_THROW((void)flash_attention_workspace_size(bad, cuda{}), error);  // d 12: not a multiple of 8

  // sq 8, group 1: 8 packed rows fit one MMA tile, so decode, with split partials in the workspace.
  EXPECT_GT(flash_attention_workspace_size(args, cuda{}), 0u);
  auto tall = make_attention_args(tensor_view<const half, 4>(buf.data(), {1, 1, 17, 8}),
                                  tensor_view<const half, 4>(buf.data(), {1, 1, 8, 8}),
                                  tensor_view<const half, 4>(buf.data(), {1, 1, 8, 8}),
                                  tensor_view<half, 4>(buf.data(), {1, 1, 17, 8}));
  EXPECT_EQ(flash_attention_workspace_size(tall, cuda{}), 0u);  // 17 rows: prefill, no workspace
  std::vector<float> weights(8);
  auto weighted = args;  // key weights without lse: the workspace holds the lse too
  weighted.kw.out = tensor_view<float, 3>(weights.data(), {1, 1, 8});
  EXPECT_GT(flash_attention_workspace_size(weighted, cuda{}), flash_attention_workspace_size(args, cuda{}));
  weighted.kw.out = tensor_view<float, 3>(weights.data(), {1, 1, 7});  // must cover the 8 keys
  EXPECT_THROW((void)flash_attention_workspace_size(weighted, cuda{}), error);
  auto misaligned = args;
  misaligned.q = tensor_view<const half, 4>(buf.data() + 4, {1, 1, 8, 72});
  EXPECT_THROW((void)flash_attention_workspace_size(misaligned, cuda{}), error);
  auto no_scratch = args;  // decode without the workspace it needs
  EXPECT_THROW(flash_attention(no_scratch, cuda{}), error);
}

TEST(FlashCuda, WorkspaceBoundCoversEveryCall) {
  // Plans only: no GPU needed. Decode calls of every group and length within the limits.
  attention_limits l;
  l.b = 3, l.hq = 16, l.hkv = 2, l.sq = 2, l.skv = 40000, l.d = l.dv = 128, l.key_weights = true;
  const std::size_t bound = flash_attention_workspace_bound(l, cuda{});
  std::vector<half> buf(8);
  std::vector<float> weights(3 * 16 * 40000);
  for (const std::int64_t b : {1, 3})
    for (const std::int64_t hkv : {1, 2})
      for (const std::int64_t skv : {1, 255, 257, 4096, 40000}) {
        const std::int64_t hq = hkv * 8;
        auto args = make_attention_args(tensor_view<const half, 4>(buf.data(), {b, hq, 2, 128}),
                                        tensor_view<const half, 4>(buf.data(), {b, hkv, skv, 128}),
                                        tensor_view<const half, 4>(buf.data(), {b, hkv, skv, 128}),
                                        tensor_view<half, 4>());
        args.kw.out = tensor_view<float, 3>(weights.data(), {b, hq, skv});
        EXPECT_LE(flash_attention_workspace_size(args, cuda{}), bound) << b << " " << hkv << " " << skv;
      }
}

}  // namespace
}  // namespace attnkit::test
