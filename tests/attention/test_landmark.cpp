// Landmark attention against a grouped softmax written here in fp64 from the
// spec's definition (retrieval by landmark score, then the softmax over the
// retrieved landmarks and the own block's keys, each landmark's weight spread
// over its block by the block's own softmax): every top_k (L1: top_k over
// every block is the full grouped softmax), a single block is dense causal
// attention (L2), and the layout lists the sorted top-k set and the own block (L4).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/sparse/landmark.hpp"
#include "support/attention_case.hpp"
#include "support/every_backend.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

using case_f32 = attention_case<float, float, float, float>;

/// The grouped softmax of one row, in fp64: o and the log of its denominator.
struct grouped_row {
  std::vector<double> o;
  double lse;
};

grouped_row grouped_softmax(const case_f32& c, const tensor<float, 4>& lm, std::int64_t b, std::int64_t h,
                            std::int64_t i, std::int64_t block, std::int64_t top_k) {
  const problem& pr = c.pr;
  const std::int64_t hk = h / (pr.hq / pr.hkv), p = pr.skv - pr.sq + i, own = p / block;
  const double scale = 1.0 / std::sqrt(double(pr.d));
  const auto dot = [&](const auto& t, std::int64_t row) {
    double x = 0;
    for (std::int64_t y = 0; y < pr.d; ++y) x += double(c.q.view(b, h, i, y)) * double(t(b, hk, row, y));
    return x * scale;
  };
  std::vector<double> s(static_cast<std::size_t>(pr.skv)), ls(static_cast<std::size_t>(own));
  for (std::int64_t j = 0; j < pr.skv; ++j) s[static_cast<std::size_t>(j)] = dot(c.k.view, j);
  for (std::int64_t x = 0; x < own; ++x) ls[static_cast<std::size_t>(x)] = dot(lm.view(), x);
  // Retrieval: the top_k earlier blocks by landmark score.
  std::vector<std::int64_t> g(static_cast<std::size_t>(own));
  std::iota(g.begin(), g.end(), 0);
  std::stable_sort(g.begin(), g.end(),
                   [&](std::int64_t u, std::int64_t w) { return ls[static_cast<std::size_t>(u)] > ls[static_cast<std::size_t>(w)]; });
  g.resize(static_cast<std::size_t>(std::min(own, top_k)));
  // Terms of the denominator: e^{landmark score} per retrieved block, e^{s_ij} per own-block key j <= p.
  grouped_row r{std::vector<double>(static_cast<std::size_t>(pr.dv), 0.0), 0};
  double best = -1e300;
  for (std::int64_t x : g) best = std::max(best, ls[static_cast<std::size_t>(x)]);
  for (std::int64_t j = own * block; j <= p; ++j) best = std::max(best, s[static_cast<std::size_t>(j)]);
  double z = 0;
  for (std::int64_t x : g) {
    const double w = std::exp(ls[static_cast<std::size_t>(x)] - best);
    z += w;
    // The block's own softmax over all its keys.
    double bz = 0, bm = -1e300;
    for (std::int64_t j = x * block; j < (x + 1) * block; ++j) bm = std::max(bm, s[static_cast<std::size_t>(j)]);
    for (std::int64_t j = x * block; j < (x + 1) * block; ++j) bz += std::exp(s[static_cast<std::size_t>(j)] - bm);
    for (std::int64_t j = x * block; j < (x + 1) * block; ++j)
      for (std::int64_t y = 0; y < pr.dv; ++y)
        r.o[static_cast<std::size_t>(y)] += w * std::exp(s[static_cast<std::size_t>(j)] - bm) / bz * c.v.view(b, hk, j, y);
  }
  for (std::int64_t j = own * block; j <= p; ++j) {
    const double w = std::exp(s[static_cast<std::size_t>(j)] - best);
    z += w;
    for (std::int64_t y = 0; y < pr.dv; ++y) r.o[static_cast<std::size_t>(y)] += w * c.v.view(b, hk, j, y);
  }
  for (double& x : r.o) x /= z;
  r.lse = best + std::log(z);
  return r;
}

void expect_grouped(const case_f32& c, const tensor<float, 4>& lm, std::int64_t block, std::int64_t top_k) {
  double worst = 0, lse_worst = 0, ref_max = 1;
  for (std::int64_t b = 0; b < c.pr.b; ++b)
    for (std::int64_t h = 0; h < c.pr.hq; ++h)
      for (std::int64_t i = 0; i < c.pr.sq; ++i) {
        const grouped_row r = grouped_softmax(c, lm, b, h, i, block, top_k);
        for (std::int64_t y = 0; y < c.pr.dv; ++y) {
          worst = std::max(worst, std::abs(c.o.view(b, h, i, y) - r.o[static_cast<std::size_t>(y)]));
          ref_max = std::max(ref_max, std::abs(r.o[static_cast<std::size_t>(y)]));
        }
        lse_worst = std::max(lse_worst, std::abs(c.lse(b, h, i) - r.lse) / std::max(1.0, std::abs(r.lse)));
      }
  EXPECT_LE(worst, 1e-5 * ref_max) << "block " << block << " top_k " << top_k;
  EXPECT_LE(lse_worst, 1e-5) << "block " << block << " top_k " << top_k;
}

tensor<float, 4> random_landmarks(const problem& pr, std::int64_t block, std::mt19937_64& rng) {
  tensor<float, 4> lm({pr.b, pr.hkv, (pr.skv + block - 1) / block, pr.d});
  fill_normal(lm.data(), lm.size(), rng);
  return lm;
}

/// Causal args over case c, with its lse.
attention_args<const float, const float, const float, float> causal_args(case_f32& c) {
  auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
  a.params = causal_params();
  a.lse = c.lse.view();
  return a;
}

/// Landmark options of a block size and a top_k.
landmark_options options(std::int64_t block, std::int64_t top_k) {
  landmark_options o;
  o.block = block;
  o.top_k = top_k;
  return o;
}

TEST(Landmark, EqualsTheGroupedSoftmax) {
  seeded_rng seeded;
  on_every_backend([&](auto backend) {
    for (const problem& pr : {problem{2, 4, 2, 60, 300, 16, 16}, problem{1, 8, 2, 1, 777, 32, 32}})
      for (std::int64_t block : {7, 50})
        for (std::int64_t top_k : {0, 2, 5, 1000}) {  // 1000: every earlier block (L1)
          case_f32 c(pr, seeded.rng);
          const tensor<float, 4> lm = random_landmarks(pr, block, seeded.rng);
          landmark_attention(causal_args(c), lm.cview(), options(block, top_k), backend);
          expect_grouped(c, lm, block, top_k);
        }
  });
}

TEST(Landmark, OneBlockIsDenseCausalAttention) {
  seeded_rng seeded;
  const problem pr{1, 4, 1, 40, 90, 16, 16};
  case_f32 c(pr, seeded.rng);
  const tensor<float, 4> lm = random_landmarks(pr, 100, seeded.rng);
  landmark_attention(causal_args(c), lm.cview(), options(100, landmark_options{}.top_k), reference{});
  c.expect_matches(c.oracle(causal_params()), 1e-5, false);
}

TEST(Landmark, TheLayoutListsTheTopBlocksAndTheOwnBlock) {
  seeded_rng seeded;
  const problem pr{1, 2, 1, 5, 500, 16, 16};
  case_f32 c(pr, seeded.rng);
  const tensor<float, 4> lm = random_landmarks(pr, 20, seeded.rng);
  const owned_layout l = landmark_layout(causal_args(c), lm.cview(), options(20, 4));
  for (std::int64_t h = 0; h < pr.hq; ++h)
    for (std::int64_t i = 0; i < pr.sq; ++i) {
      const std::int64_t own = (pr.skv - pr.sq + i) / 20;
      std::vector<std::pair<double, std::int64_t>> scored;
      for (std::int64_t g = 0; g < own; ++g) {
        double x = 0;
        for (std::int64_t y = 0; y < pr.d; ++y) x += double(c.q.view(0, h, i, y)) * lm(0, 0, g, y);
        scored.push_back({-x, g});
      }
      std::sort(scored.begin(), scored.end());
      std::vector<std::int64_t> want;
      for (int x = 0; x < 4; ++x) want.push_back(scored[static_cast<std::size_t>(x)].second);
      std::sort(want.begin(), want.end());
      want.push_back(own);
      EXPECT_EQ(std::vector<std::int64_t>(l.first(0, h, i), l.last(0, h, i)), want) << "head " << h << " row " << i;
    }
}

}  // namespace
}  // namespace attnkit::test
