// The online-softmax state and merge_lse against direct fp64 sums.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/core/softmax_state.hpp"
#include "support/random.hpp"

namespace attnkit {
namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

TEST(SoftmaxState, StreamingBlocksGiveTheLogSumExp) {
  const std::uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 8.0f);
  std::vector<float> s(1000);
  for (auto& x : s) x = dist(rng);
  double mx = -INFINITY;
  for (float x : s) mx = std::max(mx, static_cast<double>(x));
  double sum = 0;
  for (float x : s) sum += std::exp(x - mx);

  softmax_state st;
  for (std::size_t begin = 0; begin < s.size(); begin += 37) {  // blocks of 37, the last one short
    const std::size_t end = std::min(s.size(), begin + 37);
    float block_max = -inf;
    for (std::size_t j = begin; j < end; ++j) block_max = std::max(block_max, s[j]);
    st.rescale(block_max);
    for (std::size_t j = begin; j < end; ++j) st.l += std::exp(s[j] - st.m);
  }
  EXPECT_NEAR(st.lse(), mx + std::log(sum), 1e-5 * std::abs(mx + std::log(sum)));
}

TEST(SoftmaxState, EmptyAndMaskedBlocksAreHarmless) {
  softmax_state st;
  EXPECT_EQ(st.rescale(-inf), 1.0f);  // nothing yet, a fully masked block: no NaN
  EXPECT_EQ(st.lse(), -inf);
  EXPECT_EQ(st.rescale(2.0f), 0.0f);  // first real block: the (empty) past weighs 0
  st.l += 1.0f;
  EXPECT_EQ(st.rescale(-inf), 1.0f);
  EXPECT_FLOAT_EQ(st.lse(), 2.0f);
}

TEST(MergeLse, WeightsAreTheSoftmaxOfTheTwoLses) {
  const merge_weights w = merge_lse(1.0f, 3.0f);
  EXPECT_NEAR(w.a, 1.0 / (1.0 + std::exp(2.0)), 1e-7);
  EXPECT_NEAR(w.b, 1.0 / (1.0 + std::exp(-2.0)), 1e-7);
  EXPECT_NEAR(w.lse, 3.0 + std::log1p(std::exp(-2.0)), 1e-6);
  const merge_weights big = merge_lse(1000.0f, 999.0f);  // no overflow
  EXPECT_NEAR(big.lse, 1000.0 + std::log1p(std::exp(-1.0)), 1e-3);
}

TEST(MergeLse, EmptySidesContributeNothing) {
  const merge_weights one = merge_lse(-inf, 0.5f);
  EXPECT_EQ(one.a, 0.0f);
  EXPECT_EQ(one.b, 1.0f);
  EXPECT_EQ(one.lse, 0.5f);
  const merge_weights none = merge_lse(-inf, -inf);
  EXPECT_EQ(none.a, 0.0f);
  EXPECT_EQ(none.b, 0.0f);
  EXPECT_EQ(none.lse, -inf);
}

}  // namespace
}  // namespace attnkit
