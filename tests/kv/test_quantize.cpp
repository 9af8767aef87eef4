// Quantizing K and V: int8's edges (saturation, -128 never produced, zero
// rows, the NaN/inf rule, f16 scales at their range's ends), fp8 with a head
// scale, and quantized pools: rows keep their scales through append, compact,
// fork (copy on write), truncate and re-rotation, and pool_attention over them
// equals the fp64 attention over the values they stand for.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/cached_attention.hpp"
#include "attnkit/kv/pool.hpp"
#include "attnkit/kv/quantize.hpp"
#include "attnkit/kv/rope.hpp"
#include "support/cached_case.hpp"
#include "support/expect_error.hpp"
#include "support/quantized_kv.hpp"
#include "support/random.hpp"
#include "support/reference_attention.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

/// One row through quantize_int8: its codes and scale.
template <class S = float>
std::pair<std::vector<std::int8_t>, float> int8_row(const std::vector<float>& x) {
  const std::int64_t d = static_cast<std::int64_t>(x.size());
  std::vector<std::int8_t> q(x.size(), 99);
  S scale = from_float<S>(-1.0f);
  quantize_int8(tensor_view<const float, 4>(x.data(), {1, 1, 1, d}), tensor_view<std::int8_t, 4>(q.data(), {1, 1, 1, d}),
                tensor_view<S, 3>(&scale, {1, 1, 1}));
  return {q, to_float(scale)};
}

TEST(Quantize, Int8RowsSaturateSymmetricallyAndRoundToNearest) {
  seeded_rng seeded;
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<float> x(37);
    for (float& v : x) v = normal(seeded.rng);
    x[trial % 37] = -std::abs(x[trial % 37]) - 30.0f;  // the largest magnitude is negative: -127, never -128
    const auto [q, scale] = int8_row(x);
    double amax = 0;
    for (float v : x) amax = std::max(amax, std::abs(static_cast<double>(v)));
    ASSERT_NEAR(scale, amax / 127, amax / 127 * 1e-6);
    for (std::size_t i = 0; i < x.size(); ++i) {
      ASSERT_GE(q[i], -127);
      ASSERT_LE(std::abs(q[i] * static_cast<double>(scale) - x[i]), scale * (0.5 + 1e-5)) << i;
    }
    ASSERT_EQ(q[trial % 37], -127);
  }
  const auto [zeros, zero_scale] = int8_row({0.0f, -0.0f, 0.0f});
  EXPECT_EQ(zero_scale, 1.0f);
  EXPECT_EQ(zeros, std::vector<std::int8_t>(3, 0));
  // Tiny rows keep their scale above the smallest normal, so no code passes 127.
  const auto [tiny, tiny_scale] = int8_row({1e-39f, -3e-39f, 2e-40f});
  EXPECT_EQ(tiny_scale, std::numeric_limits<float>::min());
  for (std::int8_t c : tiny) EXPECT_LE(std::abs(c), 127);
  const auto [tiny16, tiny16_scale] = int8_row<half>({1e-9f, -2e-9f});
  EXPECT_EQ(tiny16_scale, 6.103515625e-5f);  // f16's smallest normal
  EXPECT_EQ(tiny16, std::vector<std::int8_t>(2, 0));
}

TEST(Quantize, Int8RejectsNanAndInfBeforeWriting) {
  std::vector<float> x(16, 1.0f);
  std::vector<std::int8_t> q(32, 5);
  std::vector<float> scales(2, -2.0f);
  for (float bad : {std::nanf(""), std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity()}) {
    std::vector<float> two(x);
    two.insert(two.end(), x.begin(), x.end());
    two[16 + 3] = bad;  // the second row: the first must not be written either
    EXPECT_THROW(quantize_int8(tensor_view<const float, 4>(two.data(), {1, 1, 2, 16}),
                               tensor_view<std::int8_t, 4>(q.data(), {1, 1, 2, 16}),
                               tensor_view<float, 3>(scales.data(), {1, 1, 2})),
                 error);
    EXPECT_EQ(q, std::vector<std::int8_t>(32, 5));
    EXPECT_EQ(scales, std::vector<float>(2, -2.0f));
  }
  // f16 scales cannot hold a row whose scale passes 65504.
  expect_error([&] { int8_row<half>({1e7f, 1.0f}); },
               "attnkit: quantize_int8: a row's largest magnitude 1e+07 needs scale 78740.2, beyond the f16 scales' "
               "range (use fp32 scales)");
}

TEST(Quantize, Fp8WithAHeadScaleRoundsSaturatesAndKeepsNan) {
  seeded_rng seeded;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float scale = 0.01f;
  std::vector<float> x(64);
  for (float& v : x) v = normal(seeded.rng);
  x[0] = 1e6f;                                     // saturates
  x[1] = -std::numeric_limits<float>::infinity();  // saturates
  x[2] = std::nanf("");                            // stays NaN
  std::vector<fp8_e4m3> q(64);
  std::vector<float> back(64);
  const float s[1] = {scale};
  quantize_fp8(tensor_view<const float, 4>(x.data(), {1, 1, 1, 64}), tensor_view<fp8_e4m3, 4>(q.data(), {1, 1, 1, 64}),
               tensor_view<const float, 2>(s, {1, 1}));
  kv_scales sc;
  sc.heads = tensor_view<const float, 2>(s, {1, 1});
  dequantize(tensor_view<const fp8_e4m3, 4>(q.data(), {1, 1, 1, 64}), sc, tensor_view<float, 4>(back.data(), {1, 1, 1, 64}));
  EXPECT_EQ(back[0], 448.0f * scale);
  EXPECT_EQ(back[1], -448.0f * scale);
  EXPECT_TRUE(std::isnan(back[2]));
  for (std::size_t i = 3; i < x.size(); ++i) {
    const double v = fp8_value<fp8_e4m3>(q[i].bits);  // within half a step of x / scale (3 mantissa bits)
    const double rel = std::abs(x[i] / scale - v) / std::max(std::abs(static_cast<double>(x[i] / scale)), std::ldexp(1.0, -6));
    ASSERT_LE(rel, 1.0 / 16 + 1e-6) << x[i];
    ASSERT_EQ(back[i], static_cast<float>(v * scale));
  }
  const float zero[1] = {0.0f};
  EXPECT_THROW(quantize_fp8(tensor_view<const float, 4>(x.data(), {1, 1, 1, 64}),
                            tensor_view<fp8_e4m3, 4>(q.data(), {1, 1, 1, 64}), tensor_view<const float, 2>(zero, {1, 1})),
               error);
}

kv_pool_options quant_pool(std::int64_t num_pages, position_mode mode = position_mode::original) {
  kv_pool_options o;
  o.layers = 2;
  o.hkv = 2;
  o.d = 24;
  o.dv = 16;
  o.page_size = 8;
  o.num_pages = num_pages;
  o.max_sequences = 4;
  o.positions = mode;
  return o;
}

/// Row j of head h, dequantized, as the pool holds it.
template <class T>
std::vector<float> key_values(const kv_pool<T>& pool, std::int64_t s, std::int64_t layer, std::int64_t h,
                              std::int64_t j, bool keys = true) {
  const std::int64_t n = keys ? pool.options().d : pool.options().dv;
  const T* row = keys ? pool.key_row(s, layer, h, j) : pool.value_row(s, layer, h, j);
  const float scale = keys ? pool.key_scale(s, layer, h, j) : pool.value_scale(s, layer, h, j);
  std::vector<float> out(static_cast<std::size_t>(n));
  for (std::int64_t x = 0; x < n; ++x) out[x] = static_cast<float>(stored_value(row[x]) * scale);
  return out;
}

/// What a row becomes when quantized alone: the values a pool must show for it.
template <class T>
std::vector<float> quantized_alone(const float* x, std::int64_t n, float head_scale) {
  std::vector<T> q(static_cast<std::size_t>(n));
  std::vector<float> out(static_cast<std::size_t>(n));
  float scale = head_scale;
  if constexpr (std::is_same_v<T, std::int8_t>)
    quantize_int8(tensor_view<const float, 4>(x, {1, 1, 1, n}), tensor_view<T, 4>(q.data(), {1, 1, 1, n}),
                  tensor_view<float, 3>(&scale, {1, 1, 1}));
  else
    quantize_fp8(tensor_view<const float, 4>(x, {1, 1, 1, n}), tensor_view<T, 4>(q.data(), {1, 1, 1, n}),
                 tensor_view<const float, 2>(&head_scale, {1, 1}));
  for (std::int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(stored_value(q[i]) * scale);
  return out;
}

template <class T>
void expect_pool_keeps_scales_with_rows(std::mt19937_64& rng) {
  SCOPED_TRACE(dtype_name<T>());
  kv_pool_options opt = quant_pool(64);
  opt.layers = 1;  // truncate acts on every layer
  if (!std::is_same_v<T, std::int8_t>) opt.k_scales = {0.01f, 0.03f}, opt.v_scales = {0.05f, 0.02f};
  kv_pool<T> pool(opt);
  const std::int64_t layer = 0;
  const auto head_scale = [&](const std::vector<float>& v, std::int64_t h) { return v.empty() ? 1.0f : v[layer * 2 + h]; };
  // The model: per head, the rows the pool must hold (as quantized alone).
  std::vector<std::vector<std::vector<float>>> model_k(2), model_v(2);
  const auto s = pool.add_sequence();
  const auto append = [&](std::int64_t seq, std::int64_t n, std::vector<std::vector<std::vector<float>>>* mk,
                          std::vector<std::vector<std::vector<float>>>* mv) {
    const auto k = random_rows(2, n, opt.d, rng), v = random_rows(2, n, opt.dv, rng);
    pool.append(seq, layer, k.cview(), v.cview());
    for (std::int64_t h = 0; h < 2 && mk; ++h)
      for (std::int64_t i = 0; i < n; ++i) {
        (*mk)[h].push_back(quantized_alone<T>(&k(h, i, 0), opt.d, head_scale(opt.k_scales, h)));
        (*mv)[h].push_back(quantized_alone<T>(&v(h, i, 0), opt.dv, head_scale(opt.v_scales, h)));
      }
  };
  const auto expect_model = [&](std::int64_t seq, const std::vector<std::vector<std::vector<float>>>& mk,
                                const std::vector<std::vector<std::vector<float>>>& mv) {
    for (std::int64_t h = 0; h < 2; ++h) {
      ASSERT_EQ(pool.index(seq, layer).length(h), static_cast<std::int64_t>(mk[h].size()));
      for (std::int64_t j = 0; j < pool.index(seq, layer).length(h); ++j) {
        ASSERT_EQ(key_values(pool, seq, layer, h, j), mk[h][j]) << "head " << h << " row " << j;
        ASSERT_EQ(key_values(pool, seq, layer, h, j, false), mv[h][j]) << "head " << h << " row " << j;
      }
    }
  };
  append(s, 13, &model_k, &model_v);
  append(s, 30, &model_k, &model_v);
  expect_model(s, model_k, model_v);
  // Fork, then write into the shared last page: the copy carries the scales.
  const auto f = pool.add_sequence();
  pool.fork(s, f);
  auto fork_k = model_k, fork_v = model_v;
  append(f, 3, &fork_k, &fork_v);
  expect_model(s, model_k, model_v);
  expect_model(f, fork_k, fork_v);
  // Compact: rows move with their scales, runs and single rows across pages.
  keep_set keep;
  for (std::int64_t h = 0; h < 2; ++h) keep.heads.push_back(random_subset(43, 0.4 + 0.3 * h, rng));
  pool.compact(s, layer, keep);
  for (std::int64_t h = 0; h < 2; ++h) {
    std::vector<std::vector<float>> k, v;
    for (std::int64_t j : keep.heads[h]) k.push_back(model_k[h][j]), v.push_back(model_v[h][j]);
    model_k[h] = k, model_v[h] = v;
  }
  expect_model(s, model_k, model_v);
  expect_model(f, fork_k, fork_v);
  pool.truncate(f, 40);
  for (std::int64_t h = 0; h < 2; ++h) fork_k[h].resize(40), fork_v[h].resize(40);
  expect_model(f, fork_k, fork_v);

  // pool_attention over both sequences equals the oracle over the values they hold.
  const std::int64_t hq = 4, group = 2;
  const std::vector<std::int64_t> cu = {0, 1, 6};
  tensor<float, 4> q({1, hq, 6, opt.d}), o({1, hq, 6, opt.dv}, NAN);
  fill_normal(q.data(), q.size(), rng);
  kv_batch batch;
  pool.gather(layer, {s, f}, batch);
  attention_params params;
  params.causal = true;
  pool_attention(q.cview(), pool, batch, tensor_view<const std::int64_t, 1>(cu.data(), {3}), o.view(), params);
  for (std::int64_t x = 0; x < 2; ++x)
    for (std::int64_t h = 0; h < 2; ++h) {
      const auto& mk = x == 0 ? model_k[h] : fork_k[h];
      const auto& mv = x == 0 ? model_v[h] : fork_v[h];
      const std::int64_t len = static_cast<std::int64_t>(mk.size());
      tensor<float, 4> kh({1, 1, len, opt.d}), vh({1, 1, len, opt.dv});
      for (std::int64_t j = 0; j < len; ++j) {
        std::copy(mk[j].begin(), mk[j].end(), &kh(0, 0, j, 0));
        std::copy(mv[j].begin(), mv[j].end(), &vh(0, 0, j, 0));
      }
      const auto qg = q.cview().slice(1, h * group, (h + 1) * group).slice(2, cu[x], cu[x + 1]);
      const reference_result ref = reference_attention(qg, kh.cview(), vh.cview(), params);
      for (std::int64_t g = 0; g < group; ++g)
        for (std::int64_t i = 0; i < cu[x + 1] - cu[x]; ++i)
          for (std::int64_t c = 0; c < opt.dv; ++c)
            ASSERT_NEAR(o(0, h * group + g, cu[x] + i, c), ref.out(0, g, i, c), 1e-5) << x << " " << h;
    }
}

TEST(QuantizedPool, RowsKeepTheirScalesThroughEveryOperation) {
  seeded_rng seeded;
  expect_pool_keeps_scales_with_rows<std::int8_t>(seeded.rng);
  expect_pool_keeps_scales_with_rows<fp8_e4m3>(seeded.rng);
  expect_pool_keeps_scales_with_rows<fp8_e5m2>(seeded.rng);
}

TEST(QuantizedPool, RerotatedKeysAreRotatedThenQuantizedAgain) {
  seeded_rng seeded;
  kv_pool_options opt = quant_pool(32, position_mode::in_cache);
  opt.rerotate = rope{};
  kv_pool<std::int8_t> pool(opt);
  const auto s = pool.add_sequence();
  const auto k = random_rows(2, 20, opt.d, seeded.rng), v = random_rows(2, 20, opt.dv, seeded.rng);
  pool.append(s, 0, k.cview(), v.cview());
  keep_set keep{{{0, 5, 19}, {3, 4}}};
  std::vector<std::vector<float>> before(2);
  pool.compact(s, 0, keep);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::size_t r = 0; r < keep.heads[h].size(); ++r) {
      const std::int64_t src = keep.heads[h][r];
      std::vector<float> want = quantized_alone<std::int8_t>(&k(h, src, 0), opt.d, 1.0f);
      rope_rotate(want.data(), opt.d, static_cast<double>(static_cast<std::int64_t>(r) - src), *opt.rerotate);
      const std::vector<float> got = key_values(pool, s, 0, h, static_cast<std::int64_t>(r));
      const float step = pool.key_scale(s, 0, h, static_cast<std::int64_t>(r));
      for (std::int64_t x = 0; x < opt.d; ++x)
        ASSERT_LE(std::abs(got[x] - want[x]), step * 0.5f * 1.0001f + 1e-6f) << h << " " << r << " " << x;
    }
}

TEST(QuantizedPool, BadInputFailsBeforeAnyChange) {
  kv_pool<std::int8_t> pool(quant_pool(16));
  const auto s = pool.add_sequence();
  tensor<float, 3> k({2, 2, 24}, 1.0f), v({2, 2, 16}, 1.0f);
  k(1, 1, 5) = std::nanf("");
  EXPECT_THROW(pool.append(s, 0, k.cview(), v.cview()), error);
  EXPECT_EQ(pool.index(s, 0).length(0), 0);
  EXPECT_EQ(pool.free_pages(), 16);
  kv_pool_options bad = quant_pool(16);
  bad.k_scales = {1.0f, 1.0f, 1.0f};
  expect_error([&] { kv_pool<fp8_e4m3> p(bad); },
               "attnkit: kv_pool: k_scales must be empty or, for an fp8 pool, hold layers * hkv = 4 scales; got 3 for a "
               "e4m3 pool");
  bad.k_scales = {1.0f, 1.0f, 0.0f, 1.0f};
  expect_error([&] { kv_pool<fp8_e4m3> p(bad); }, "attnkit: kv_pool: k_scales[2] must be finite and > 0, got 0");
  bad.k_scales = {1.0f, 1.0f, 1.0f, 1.0f};
  EXPECT_THROW(kv_pool<half> p(bad), error);  // a float pool takes no scales
}

}  // namespace
}  // namespace attnkit::test
