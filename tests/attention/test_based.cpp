// BASED: the Taylor feature maps, the linear layer against a direct fp64
// evaluation of its formula (no features), state passing, and the window
// layers' ring-buffer decode against windowed flash prefill.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/linear/based.hpp"
#include "support/linear_inputs.hpp"
#include "support/linear_oracle.hpp"
#include "support/seeded.hpp"

namespace attnkit {
namespace {

tensor<float, 4> normal(std::int64_t b, std::int64_t h, std::int64_t t, std::int64_t d, std::mt19937_64& rng,
                        float sd = 1.0f) {
  tensor<float, 4> x({b, h, t, d});
  std::normal_distribution<float> n(0.0f, sd);
  for (std::int64_t i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  return x;
}

/// o_t = Σ_{s<=t} p(s_ts) v_s [/ (Σ p + eps)], p(s) = 1 + s + s²/2, s = q·k/sqrt(d), in fp64.
std::vector<double> based_oracle(const tensor<float, 4>& q, const tensor<float, 4>& k, const tensor<float, 4>& v,
                                 bool normalize, double eps) {
  const std::int64_t B = q.extent(0), H = q.extent(1), T = q.extent(2), d = q.extent(3), V = v.extent(3);
  std::vector<double> o(static_cast<std::size_t>(B * H * T * V), 0.0);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t t = 0; t < T; ++t) {
        double den = 0;
        std::vector<double> num(static_cast<std::size_t>(V), 0.0);
        for (std::int64_t s = 0; s <= t; ++s) {
          double dot = 0;
          for (std::int64_t x = 0; x < d; ++x) dot += double(q(b, h, t, x)) * k(b, h, s, x);
          const double sc = dot / std::sqrt(double(d)), p = 1 + sc + sc * sc / 2;
          den += p;
          for (std::int64_t y = 0; y < V; ++y) num[y] += p * v(b, h, s, y);
        }
        for (std::int64_t y = 0; y < V; ++y)
          o[static_cast<std::size_t>(((b * H + h) * T + t) * V + y)] = normalize ? num[y] / (den + eps) : num[y];
      }
  return o;
}

TEST(Based, FeatureMapsGiveTheTaylorKernel) {
  test::seeded_rng s;
  for (const std::int64_t d : {16, 7})
    for (const taylor_map map : {taylor_map::full, taylor_map::symmetric}) {
      const tensor<float, 4> x = normal(1, 1, 50, d, s.rng), y = normal(1, 1, 50, d, s.rng);
      const std::int64_t D = taylor_features(map, d);
      EXPECT_EQ(D, map == taylor_map::full ? 1 + d + d * d : 1 + d + d * (d + 1) / 2);
      tensor<float, 4> fx({1, 1, 50, D}), fy({1, 1, 50, D});
      taylor_feature_map(x.cview(), fx.view(), map);
      taylor_feature_map(y.cview(), fy.view(), map);
      for (std::int64_t t = 0; t < 50; ++t) {
        double dot = 0, inner = 0;
        for (std::int64_t i = 0; i < d; ++i) dot += double(x(0, 0, t, i)) * y(0, 0, t, i);
        for (std::int64_t i = 0; i < D; ++i) inner += double(fx(0, 0, t, i)) * fy(0, 0, t, i);
        const double sc = dot / std::sqrt(double(d));
        EXPECT_NEAR(inner, 1 + sc + sc * sc / 2, 1e-5 * (1 + sc * sc)) << "d " << d << " row " << t;
      }
    }
  EXPECT_EQ(taylor_features(taylor_map::full, 16), 273);
  EXPECT_EQ(taylor_features(taylor_map::symmetric, 16), 153);
}

template <class Backend>
void check_against_oracle(const Backend& backend, const char* name) {
  test::seeded_rng s;
  const std::int64_t dims_chunks[][2] = {{16, 32}, {7, 1}, {24, 48}};  // (d, chunk): chunks dividing t or not
  for (const auto& [d, chunk] : dims_chunks)
    for (const std::int64_t t : {1, 63, 200})
      for (const std::int64_t V : {64, 33})
        for (const taylor_map map : {taylor_map::full, taylor_map::symmetric})
          for (const based_output out : {based_output::normalized, based_output::numerator}) {
            SCOPED_TRACE(std::string(name) + " d " + std::to_string(d) + " chunk " + std::to_string(chunk) + " t " +
                         std::to_string(t) + " V " + std::to_string(V) +
                         (map == taylor_map::full ? " full" : " symmetric") +
                         (out == based_output::normalized ? " normalized" : " numerator"));
            const tensor<float, 4> q = normal(1, 2, t, d, s.rng, 0.5f), k = normal(1, 2, t, d, s.rng, 0.5f),
                                   v = normal(1, 2, t, V, s.rng);
            based_params p;
            p.map = map;
            p.output = out;
            p.chunk = chunk;
            tensor<float, 4> o({1, 2, t, V});
            based_attention(q.cview(), k.cview(), v.cview(), o.view(), {}, p, backend);
            EXPECT_LT(test::relative_l2(o.data(), based_oracle(q, k, v, out == based_output::normalized, p.eps)),
                      1e-5);
          }
}

TEST(Based, MatchesTheFormulaInFp64) {
  check_against_oracle(reference{}, "reference");
  check_against_oracle(cpu<xsimd::default_arch>{}, "cpu");
}

TEST(Based, FullAndSymmetricMapsGiveTheSameOutput) {
  test::seeded_rng s;
  const tensor<float, 4> q = normal(1, 2, 100, 16, s.rng, 0.5f), k = normal(1, 2, 100, 16, s.rng, 0.5f),
                         v = normal(1, 2, 100, 64, s.rng);
  tensor<float, 4> full({1, 2, 100, 64}), sym({1, 2, 100, 64});
  based_params p;
  p.map = taylor_map::full;
  based_attention(q.cview(), k.cview(), v.cview(), full.view(), {}, p, reference{});
  p.map = taylor_map::symmetric;
  based_attention(q.cview(), k.cview(), v.cview(), sym.view(), {}, p, reference{});
  EXPECT_LT(test::relative_l2(sym.data(), std::vector<double>(full.data(), full.data() + full.size())), 1e-6);
}

TEST(Based, DenominatorIsAtLeastHalfTheVisibleKeys) {
  test::seeded_rng s;
  const tensor<float, 4> q = normal(1, 1, 80, 16, s.rng, 2.0f), k = normal(1, 1, 80, 16, s.rng, 2.0f);
  tensor<float, 4> ones({1, 1, 80, 1}), den({1, 1, 80, 1});
  std::fill(ones.data(), ones.data() + ones.size(), 1.0f);
  based_params p;
  p.output = based_output::numerator;  // with v = 1 the numerator is the denominator
  based_attention(q.cview(), k.cview(), ones.cview(), den.view(), {}, p, reference{});
  for (std::int64_t t = 0; t < 80; ++t) EXPECT_GE(den(0, 0, t, 0), 0.5f * float(t + 1) * (1 - 1e-5f)) << t;
}

TEST(Based, PrefillThenDecodeStepsEqualsOnePrefill) {
  test::seeded_rng s;
  const std::int64_t t = 90, T = 70, V = 24;
  const tensor<float, 4> q = normal(1, 2, t, 16, s.rng, 0.5f), k = normal(1, 2, t, 16, s.rng, 0.5f),
                         v = normal(1, 2, t, V, s.rng);
  based_params p;
  const std::int64_t D = based_state_features(p, 16);
  tensor<float, 4> o({1, 2, t, V}), st({1, 2, D, V});
  tensor<float, 3> z({1, 2, D});
  std::fill(st.data(), st.data() + st.size(), 0.0f);
  std::fill(z.data(), z.data() + z.size(), 0.0f);
  const auto rows = [&](const tensor<float, 4>& x, std::int64_t a, std::int64_t b) { return x.cview().slice(2, a, b); };
  const cpu<xsimd::default_arch> backend;
  based_attention(rows(q, 0, T), rows(k, 0, T), rows(v, 0, T), o.view().slice(2, 0, T), {st.view(), z.view()}, p,
                  backend);
  for (std::int64_t i = T; i < t; ++i)
    based_attention(rows(q, i, i + 1), rows(k, i, i + 1), rows(v, i, i + 1), o.view().slice(2, i, i + 1),
                    {st.view(), z.view()}, p, backend);
  EXPECT_LT(test::relative_l2(o.data(), based_oracle(q, k, v, true, p.eps)), 1e-5);
}

// The cpu backend keeps its state by Taylor order without expanding features in
// a chunk; the state it hands back must equal the reference's expanded-feature
// state, and a state started on one backend must continue on the other.
TEST(Based, CpuStateByOrderEqualsExpandedFeatureState) {
  test::seeded_rng s;
  const std::int64_t t = 150, split = 77, d = 16, V = 40;
  const tensor<float, 4> q = normal(2, 3, t, d, s.rng, 0.5f), k = normal(2, 3, t, d, s.rng, 0.5f),
                         v = normal(2, 3, t, V, s.rng);
  for (const taylor_map map : {taylor_map::full, taylor_map::symmetric}) {
    based_params p;
    p.map = map;
    p.chunk = 32;
    const std::int64_t D = based_state_features(p, d);
    tensor<float, 4> o_ref({2, 3, t, V}), o_cpu({2, 3, t, V}), s_ref({2, 3, D, V}), s_cpu({2, 3, D, V});
    tensor<float, 3> z_ref({2, 3, D}), z_cpu({2, 3, D});
    for (auto* x : {&s_ref, &s_cpu}) std::fill(x->data(), x->data() + x->size(), 0.0f);
    for (auto* x : {&z_ref, &z_cpu}) std::fill(x->data(), x->data() + x->size(), 0.0f);
    const auto rows = [](const tensor<float, 4>& x, std::int64_t a, std::int64_t b) { return x.cview().slice(2, a, b); };
    based_attention(rows(q, 0, split), rows(k, 0, split), rows(v, 0, split), o_ref.view().slice(2, 0, split),
                    {s_ref.view(), z_ref.view()}, p, reference{});
    based_attention(rows(q, 0, split), rows(k, 0, split), rows(v, 0, split), o_cpu.view().slice(2, 0, split),
                    {s_cpu.view(), z_cpu.view()}, p, cpu<xsimd::default_arch>{});
    EXPECT_LT(test::relative_l2(s_cpu.data(), std::vector<double>(s_ref.data(), s_ref.data() + s_ref.size())), 1e-5);
    EXPECT_LT(test::relative_l2(z_cpu.data(), std::vector<double>(z_ref.data(), z_ref.data() + z_ref.size())), 1e-5);
    // Swap: the cpu continues the reference's state and the reference the cpu's.
    based_attention(rows(q, split, t), rows(k, split, t), rows(v, split, t), o_cpu.view().slice(2, split, t),
                    {s_ref.view(), z_ref.view()}, p, cpu<xsimd::default_arch>{});
    based_attention(rows(q, split, t), rows(k, split, t), rows(v, split, t), o_ref.view().slice(2, split, t),
                    {s_cpu.view(), z_cpu.view()}, p, reference{});
    const std::vector<double> want = based_oracle(q, k, v, true, p.eps);
    EXPECT_LT(test::relative_l2(o_cpu.data(), want), 1e-5);
    EXPECT_LT(test::relative_l2(o_ref.data(), want), 1e-5);
  }
}

TEST(Based, CpuHalfInputsAndBadStateShapes) {
  test::seeded_rng s;
  const std::int64_t t = 70, d = 16, V = 32;
  const tensor<float, 4> q = normal(1, 2, t, d, s.rng, 0.5f), k = normal(1, 2, t, d, s.rng, 0.5f),
                         v = normal(1, 2, t, V, s.rng);
  const tensor<bfloat16, 4> qb = test::rounded<bfloat16>(q), kb = test::rounded<bfloat16>(k),
                            vb = test::rounded<bfloat16>(v);
  based_params p;
  tensor<float, 4> o({1, 2, t, V}), o_ref({1, 2, t, V});
  based_attention(qb.cview(), kb.cview(), vb.cview(), o.view(), {}, p, cpu<xsimd::default_arch>{});
  based_attention(qb.cview(), kb.cview(), vb.cview(), o_ref.view(), {}, p, reference{});
  EXPECT_LT(test::relative_l2(o.data(), std::vector<double>(o_ref.data(), o_ref.data() + o_ref.size())), 1e-5);

  tensor<float, 4> wrong({1, 2, d, V});  // K rows instead of D' = 153
  tensor<float, 3> z({1, 2, based_state_features(p, d)});
  EXPECT_THROW(based_attention(q.cview(), k.cview(), v.cview(), o.view(), {wrong.view(), z.view()}, p,
                               cpu<xsimd::default_arch>{}),
               error);
  EXPECT_THROW(based_attention(q.cview(), k.cview(), v.cview().slice(2, 0, t - 1), o.view(), {}, p,
                               cpu<xsimd::default_arch>{}),
               error);
}

TEST(Based, WindowRingDecodeEqualsWindowedPrefill) {
  test::seeded_rng s;
  const std::int64_t t = 70, hq = 4, hkv = 2, d = 16, window = 20;  // looks back 10 tokens
  const tensor<float, 4> q = normal(1, hq, t, d, s.rng), k = normal(1, hkv, t, d, s.rng), v = normal(1, hkv, t, d, s.rng);
  tensor<float, 4> prefill({1, hq, t, d}), step({1, hq, 1, d}), full({1, hq, t, d}), causal({1, hq, t, d});
  flash_attention(q.cview(), k.cview(), v.cview(), prefill.view(), based_window_params(window));
  window_ring<float> ring(hkv, d, d, window);
  for (std::int64_t i = 0; i < t; ++i) {
    ring.append(tensor_view<const float, 2>(&k(0, 0, i, 0), {hkv, d}, {t * d, 1}),
                tensor_view<const float, 2>(&v(0, 0, i, 0), {hkv, d}, {t * d, 1}));
    flash_attention(q.cview().slice(2, i, i + 1), ring.keys(), ring.values(), step.view(), attention_params{});
    double diff = 0, norm = 0;
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t x = 0; x < d; ++x) {
        diff += std::pow(step(0, h, 0, x) - prefill(0, h, i, x), 2.0);
        norm += std::pow(prefill(0, h, i, x), 2.0);
      }
    EXPECT_LT(std::sqrt(diff / norm), 1e-5) << "token " << i;
  }
  // A window at least as long as the text is plain causal softmax attention.
  attention_params plain;
  plain.causal = true;
  flash_attention(q.cview(), k.cview(), v.cview(), full.view(), based_window_params(2 * t));
  flash_attention(q.cview(), k.cview(), v.cview(), causal.view(), plain);
  EXPECT_TRUE(std::equal(full.data(), full.data() + full.size(), causal.data()));
}

}  // namespace
}  // namespace attnkit
