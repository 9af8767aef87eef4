// Calls a fuzzer found mishandled: each must give attnkit::error (never a foreign
// exception, an overflow or a crash) or, where the input is valid, the same
// result on every backend.
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attnkit.hpp"
#include "support/expect_error.hpp"

namespace attnkit::test {
namespace {

constexpr std::int64_t huge = std::numeric_limits<std::int64_t>::max();

/// The call throws attnkit::error whose message contains `part`, and nothing else.
template <class Call>
void expect_rejected(Call&& call, const std::string& part) {
  try {
    call();
    ADD_FAILURE() << "accepted; expected an error mentioning '" << part << "'";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "a foreign exception: " << e.what();
  }
}

TEST(HostileInput, AHugeLinearChunkRunsAsOneChunkOfT) {
  tensor<float, 4> q({1, 1, 2, 3}, 0.5f), v({1, 1, 2, 2}, 1.5f), want({1, 1, 2, 2}), o({1, 1, 2, 2});
  linear_attention(q.cview(), q.cview(), v.cview(), want.view(), {}, {}, {}, reference{});
  linear_params two;
  two.chunk = 2;  // the most a call over t = 2 rows can use
  std::vector<std::byte> ws(linear_attention_workspace_size(3, 2, two, cpu_native{executor::serial()}));
  const cpu_native lent{executor::serial(), workspace{ws.data(), ws.size()}};
  for (std::int64_t chunk : {std::int64_t{1} << 28, std::int64_t{1} << 62, huge}) {
    linear_params p;
    p.chunk = chunk;
    linear_attention(q.cview(), q.cview(), v.cview(), o.view(), {}, {}, p, reference{});
    for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(o.data()[i], want.data()[i]);
    linear_attention(q.cview(), q.cview(), v.cview(), o.view(), {}, {}, p, lent);  // allocates nothing
    for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(o.data()[i], want.data()[i]);
    if (chunk > (std::int64_t{1} << 40))
      expect_rejected([&] { linear_attention_workspace_size(3, 2, p, cpu_native{}); }, "bytes of scratch");
  }
}

TEST(HostileInput, ANullPageTableIsRejected) {
  tensor<float, 4> q({1, 1, 1, 4}, 1.0f), o({1, 1, 1, 4}), pages({2, 1, 4, 4}, 1.0f);
  const std::int32_t indptr[] = {0, 1}, last[] = {4};
  paged_kv<const float> kv{pages.cview(), {tensor_view<const std::int32_t, 1>(indptr, {2}),
                                           tensor_view<const std::int32_t, 1>(nullptr, {1}),
                                           tensor_view<const std::int32_t, 1>(last, {1})}};
  expect_rejected([&] { flash_attention(q.cview(), kv, kv, o.view()); }, "k.table.indices has 1 elements but a null");
  expect_rejected([&] { flash_attention_workspace_size(q.cview(), kv, kv, cpu_native{}); }, "null data pointer");
}

TEST(HostileInput, KvCacheValidatesBeforeItAllocates) {
  kv_cache_options o;
  o.hkv = std::int64_t{1} << 62;
  o.d = 0;
  o.capacity = 8;
  expect_rejected([&] { kv_cache<float> c(o); }, "hkv must be in [1, 2^31)");
  o.hkv = 2;
  expect_rejected([&] { kv_cache<float> c(o); }, "d must be in [1, 2^31)");
  o.d = 4;
  o.capacity = huge;
  expect_rejected([&] { kv_cache<float> c(o); }, "capacity must be in [1, 2^31)");
  o.capacity = 8;
  kv_cache<float> cache(o);
  tensor<float, 3> k({2, 1, 4}, 1.0f);
  const tensor_view<const float, 3> many(k.data(), {2, std::int64_t{1} << 40, 4}, {4, 0, 1});  // valid strides, too many rows
  expect_rejected([&] { cache.append(many, many); }, "cannot take 1099511627776 more");
}

TEST(HostileInput, WorkspaceQueriesCheckLikeTheirCalls) {
  tensor<float, 4> q({1, 2, 4, 8}, 1.0f);
  const auto with_extent = [&](std::size_t r, std::int64_t e) {
    auto ext = q.cview().extents();
    ext[r] = e;
    return tensor_view<const float, 4>(q.data(), ext, q.cview().strides());
  };
  expect_rejected([&] { flash_attention_workspace_size(with_extent(0, -1), q.cview(), q.cview(), cpu_native{}); },
                  "q.extent(0) must be >= 0, got -1");
  expect_rejected([&] { flash_attention_workspace_size(with_extent(2, -3), q.cview(), q.cview(), cpu_native{}); },
                  "q.extent(2) must be >= 0, got -3");
  expect_rejected([&] { flash_attention_workspace_size(with_extent(1, 3), q.cview(), q.cview(), cpu_native{}); },
                  "must be a multiple of k.extent(1)");
  expect_rejected([&] { linear_attention_workspace_size(-1, 2, {}, cpu_native{}); }, "must be >= 0");
  expect_rejected([&] { based_attention_workspace_size(0, 2, {}, cpu_native{}); }, "(d) must be in [1, 2^24]");
}

TEST(HostileInput, ExtentsThatOverflowAreRejectedNotMultiplied) {
  tensor<float, 4> q({1, 1, 4, 8}, 1.0f), o({1, 1, 4, 8});
  const tensor_view<const float, 4> wide(q.data(), {huge, huge, 4, 8}, {0, 0, 8, 1});
  expect_rejected([&] { flash_attention(wide, q.cview(), q.cview(), o.view()); }, "addresses more than 2^63");
  expect_rejected([&] { flash_attention(wide, q.cview(), q.cview(), o.view(), {}, {}, reference{}); },
                  "addresses more than 2^63");
  budget_options b;
  b.budget = 8;
  b.sinks = huge;
  expect_rejected([&] { h2o p(b); }, "sinks must be in [0, 2^31)");
  b.sinks = 2;
  b.slack = huge;
  expect_rejected([&] { h2o p(b); }, "slack must be in [0, 2^31)");
  streaming_options s;
  s.sinks = huge;
  s.recent = huge;
  expect_rejected([&] { streaming_llm p(s); }, "sinks must be in [0, 2^31)");
}

TEST(HostileInput, NonFiniteSlopesAndSinkLogitsAreRejected) {
  tensor<float, 4> q({1, 2, 3, 8}, 0.1f), o({1, 2, 3, 8});
  const float slopes[] = {0.5f, std::nanf("")}, sinks[] = {std::numeric_limits<float>::infinity(), 0.0f};
  attention_params with_slopes, with_sinks;
  with_slopes.alibi_slopes = tensor_view<const float, 1>(slopes, {2});
  with_sinks.sink_logits = tensor_view<const float, 1>(sinks, {2});
  for (const auto& c : {std::pair{with_slopes, "params.alibi_slopes(1) must be finite"},
                        std::pair{with_sinks, "params.sink_logits(0) must be finite"}}) {
    const attention_params& params = c.first;  // a plain reference: lambdas cannot capture a structured binding in C++17
    const char* what = c.second;
    expect_rejected([&] { flash_attention(q.cview(), q.cview(), q.cview(), o.view(), params); }, what);
    expect_rejected([&] { flash_attention(q.cview(), q.cview(), q.cview(), o.view(), params, {}, reference{}); },
                    what);
    expect_rejected([&] { dense_attention(q.cview(), q.cview(), q.cview(), o.view(), params); }, what);
  }
}

TEST(HostileInput, EmptyViewsAreSafeOnEveryBackend) {
  // No keys at all, K and V null: o = 0 and lse = -inf on both backends.
  tensor<float, 4> q({1, 2, 3, 8}, 0.1f), o({1, 2, 3, 8}, 7.0f);
  tensor<float, 3> lse({1, 2, 3});
  const tensor_view<const float, 4> none(nullptr, {1, 1, 0, 8});
  for (int backend = 0; backend < 2; ++backend) {
    if (backend == 0)
      flash_attention(q.cview(), none, none, o.view(), {}, lse.view(), reference{});
    else
      flash_attention(q.cview(), none, none, o.view(), {}, lse.view(), cpu_native{});
    for (std::int64_t i = 0; i < o.size(); ++i) EXPECT_EQ(o.data()[i], 0.0f);
    for (std::int64_t i = 0; i < lse.size(); ++i) EXPECT_EQ(lse.data()[i], -std::numeric_limits<float>::infinity());
  }
  // dv = 0 is no head at all: rejected, like d = 0.
  const tensor_view<const float, 4> no_values(nullptr, {1, 1, 5, 0});
  const tensor_view<float, 4> no_out(nullptr, {1, 2, 3, 0});
  tensor<float, 4> k5({1, 1, 5, 8}, 0.1f);
  expect_rejected([&] { flash_attention(q.cview(), k5.cview(), no_values, no_out, {}, {}, reference{}); },
                  "(dv) must be >= 1");
  // Packed sequences whose last one is empty.
  tensor<float, 4> lq({1, 1, 5, 4}, 0.3f), lv({1, 1, 5, 2}, 1.0f), lo({1, 1, 5, 2}), ro({1, 1, 5, 2});
  const std::int64_t cu[] = {0, 2, 5, 5};
  const tensor_view<const std::int64_t, 1> cu_seqlens(cu, {4});
  linear_attention_varlen(lq.cview(), lq.cview(), lv.cview(), lo.view(), cu_seqlens, {}, {}, {}, cpu_native{});
  linear_attention_varlen(lq.cview(), lq.cview(), lv.cview(), ro.view(), cu_seqlens, {}, {}, {}, reference{});
  for (std::int64_t i = 0; i < lo.size(); ++i) EXPECT_NEAR(lo.data()[i], ro.data()[i], 1e-6f);
  expect_rejected(
      [&] {
        linear_attention_varlen(lq.cview(), lq.cview(), lv.cview(), lo.view(),
                                tensor_view<const std::int64_t, 1>(nullptr, {4}), {}, {}, {}, cpu_native{});
      },
      "cu_seqlens has 4 elements but a null");
}

TEST(HostileInput, BackendsAcceptAndRejectTheSameHeadCounts) {
  tensor<float, 4> q({1, 0, 3, 8}), o({1, 0, 3, 8});
  tensor<float, 3> kw_out({1, 0, 5});
  const tensor_view<const float, 4> k(nullptr, {1, 0, 5, 8});
  key_weights kw;
  kw.out = kw_out.view();
  for (int backend = 0; backend < 2; ++backend)
    expect_rejected(
        [&] {
          if (backend == 0)
            flash_attention(q.cview(), k, k, o.view(), {}, {}, kw, reference{});
          else
            flash_attention(q.cview(), k, k, o.view(), {}, {}, kw, cpu_native{});
        },
        "k.extent(1) (hkv) must be >= 1, got 0");
}

}  // namespace
}  // namespace attnkit::test
