// dense_attention against the fp64 oracle: sizes, masks, head dims, GQA,
// layouts, dtypes, fully masked rows and the probability matrix.
#include <cmath>
#include <limits>
#include <random>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/dense.hpp"
#include "support/attention_case.hpp"

namespace attnkit::test {
namespace {

/// Runs dense on a random problem with one mask case and checks it against the oracle.
template <class TQ, class TK, class TV, class TO>
void check_dense(const problem& pr, mask_case m) {
  check_against_oracle<TQ, TK, TV, TO>(
      pr, m,
      [](auto& c, const attention_params& params) {
        dense_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), c.probs.view());
      },
      true);
}

// Every mask and modifier over the awkward sizes, GQA 4.
class DenseSizes : public ::testing::TestWithParam<size_mask_param> {};

TEST_P(DenseSizes, MatchesFp64Reference) {
  const auto [sq, skv, m] = GetParam();
  problem pr;
  pr.b = 2, pr.hq = 4, pr.hkv = 1, pr.sq = sq, pr.skv = skv, pr.d = 64, pr.dv = 64;
  check_dense<float, float, float, float>(pr, m);
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseSizes, size_mask_sweep(), size_mask_name);

// Head dims, GQA group sizes and memory layouts.
class DenseShapes : public ::testing::TestWithParam<std::tuple<std::int64_t, std::int64_t, layout>> {};

TEST_P(DenseShapes, MatchesFp64Reference) {
  const auto [d, group, lay] = GetParam();
  problem pr;
  pr.b = 1, pr.hkv = 2, pr.hq = 2 * group, pr.sq = 31, pr.skv = 127, pr.d = d, pr.dv = d, pr.lay = lay;
  check_dense<float, float, float, float>(pr, mask_case::causal);
  check_dense<float, float, float, float>(pr, mask_case::everything);
}

INSTANTIATE_TEST_SUITE_P(Dense, DenseShapes,
                         ::testing::Combine(::testing::Values(1, 8, 33, 64, 80, 96, 128, 256),
                                            ::testing::Values(1, 4, 8),
                                            ::testing::Values(layout::bhsd, layout::bshd)),
                         [](const auto& info) {
                           return "d" + std::to_string(std::get<0>(info.param)) + "_gqa" +
                                  std::to_string(std::get<1>(info.param)) + "_" +
                                  layout_name(std::get<2>(info.param));
                         });

// Element type combinations: (q, k, v, o).
template <class Types>
class DenseDtypes : public ::testing::Test {};

using dtype_combos = ::testing::Types<
    std::tuple<float, float, float, float>, std::tuple<half, half, half, half>,
    std::tuple<bfloat16, bfloat16, bfloat16, bfloat16>, std::tuple<float, half, half, float>,
    std::tuple<float, bfloat16, bfloat16, float>, std::tuple<bfloat16, bfloat16, bfloat16, float>,
    std::tuple<half, half, half, bfloat16>, std::tuple<float, half, bfloat16, half>>;
TYPED_TEST_SUITE(DenseDtypes, dtype_combos);

TYPED_TEST(DenseDtypes, MatchesFp64Reference) {
  using TQ = std::tuple_element_t<0, TypeParam>;
  using TK = std::tuple_element_t<1, TypeParam>;
  using TV = std::tuple_element_t<2, TypeParam>;
  using TO = std::tuple_element_t<3, TypeParam>;
  for (const auto& [sq, skv] : {std::pair<std::int64_t, std::int64_t>{7, 31}, {127, 300}, {1, 300}}) {
    problem pr;
    pr.b = 1, pr.hq = 8, pr.hkv = 2, pr.sq = sq, pr.skv = skv, pr.d = 96, pr.dv = 96, pr.lay = layout::bshd;
    for (mask_case m : {mask_case::none, mask_case::causal, mask_case::everything}) check_dense<TQ, TK, TV, TO>(pr, m);
  }
}

TEST(Dense, ValueDimDiffersFromKeyDim) {
  problem pr;
  pr.b = 2, pr.hq = 4, pr.hkv = 2, pr.sq = 31, pr.skv = 127, pr.d = 80, pr.dv = 33;
  check_dense<float, float, float, float>(pr, mask_case::everything);
}

TEST(Dense, FullyMaskedRowsGiveZeroAndMinusInfinity) {
  // sq > skv under a causal mask: the first sq - skv rows sit before key 0.
  std::mt19937_64 rng(fresh_seed());
  problem pr;
  pr.hq = 2, pr.hkv = 1, pr.sq = 9, pr.skv = 4, pr.d = 16, pr.dv = 16;
  attention_case<float, float, float, float> c(pr, rng);
  attention_params params;
  params.causal = true;
  dense_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), c.probs.view());
  for (std::int64_t h = 0; h < pr.hq; ++h)
    for (std::int64_t i = 0; i < pr.sq; ++i) {
      const bool masked = i < pr.sq - pr.skv;
      EXPECT_EQ(std::isinf(c.lse(0, h, i)) && c.lse(0, h, i) < 0, masked) << "row " << i;
      for (std::int64_t x = 0; x < pr.dv; ++x) {
        EXPECT_FALSE(std::isnan(c.o.view(0, h, i, x)));
        if (masked) {
          EXPECT_EQ(c.o.view(0, h, i, x), 0.0f);
        }
      }
      for (std::int64_t j = 0; j < pr.skv && masked; ++j) EXPECT_EQ(c.probs(0, h, i, j), 0.0f);
    }
  c.expect_matches(c.oracle(params), 1e-5, true);
}

TEST(Dense, FullyMaskedRowWithSinkLogitHasLseOfTheSink) {
  std::mt19937_64 rng(fresh_seed());
  problem pr;
  pr.hq = 1, pr.sq = 3, pr.skv = 1, pr.d = 8, pr.dv = 8;
  attention_case<float, float, float, float> c(pr, rng);
  const float sink = 0.75f;
  attention_params params;
  params.causal = true;
  params.sink_logits = tensor_view<const float, 1>(&sink, {1});
  dense_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view());
  EXPECT_EQ(c.lse(0, 0, 0), sink);  // rows 0, 1 see no key: the denominator is exp(sink) alone
  EXPECT_EQ(c.lse(0, 0, 1), sink);
  EXPECT_EQ(c.o.view(0, 0, 0, 0), 0.0f);
  EXPECT_GT(c.lse(0, 0, 2), sink);
}

TEST(Dense, ProbabilityRowsSumToOneLessTheSinkShare) {
  std::mt19937_64 rng(fresh_seed());
  problem pr;
  pr.hq = 4, pr.hkv = 4, pr.sq = 31, pr.skv = 127, pr.d = 32, pr.dv = 32;
  attention_case<float, float, float, float> c(pr, rng);
  std::vector<float> slopes, sinks;
  const attention_params params = make_params(mask_case::everything, pr, slopes, sinks, rng);
  dense_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), c.probs.view());
  for (std::int64_t h = 0; h < pr.hq; ++h)
    for (std::int64_t i = 0; i < pr.sq; ++i) {
      double sum = 0;
      for (std::int64_t j = 0; j < pr.skv; ++j) sum += c.probs(0, h, i, j);
      EXPECT_NEAR(sum + std::exp(sinks[h] - c.lse(0, h, i)), 1.0, 1e-5);
    }
}

TEST(Dense, DoubleAccumulationMatchesTheOracleClosely) {
  std::mt19937_64 rng(fresh_seed());
  problem pr;
  pr.b = 2, pr.hq = 4, pr.hkv = 2, pr.sq = 31, pr.skv = 300, pr.d = 64, pr.dv = 64;
  attention_case<float, float, float, float> c(pr, rng);
  std::vector<float> slopes, sinks;
  const attention_params params = make_params(mask_case::everything, pr, slopes, sinks, rng);
  tensor<float, 4> o({pr.b, pr.hq, pr.sq, pr.dv});
  dense_attention<double>(c.q.cview(), c.k.cview(), c.v.cview(), o.view(), params);
  const error_stats e = compare_output(o.cview(), c.oracle(params));
  EXPECT_TRUE(e.within(1e-6)) << e.rel_l2;  // bounded by the float output rounding only
  EXPECT_LT(e.rel_l2, 2e-7);
}

}  // namespace
}  // namespace attnkit::test
