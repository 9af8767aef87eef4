// Routing attention against an fp64 version written here from the spec: a
// causal softmax (by position) per cluster, and each query's clusters merged
// by lse. One cluster of every token, or any number of clusters each holding
// every token, is dense causal attention (R1, R2); clusters hold exactly
// `window` members, ascending, the best scoring by fp64 cosines (R3); the
// k-means step moves centroids as specified (R6); planted query-key pairs are
// routed together (recall printed).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/sparse/routing.hpp"
#include "support/attention_case.hpp"
#include "support/every_backend.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

using case_f32 = attention_case<float, float, float, float>;

/// Centroids drawn from the queries of each head.
routing_centroids sample_centroids(const case_f32& c, std::int64_t clusters, std::mt19937_64& rng) {
  routing_centroids mu(c.pr.hq, clusters, c.pr.d);
  std::uniform_int_distribution<std::int64_t> row(0, c.pr.sq - 1);
  for (std::int64_t h = 0; h < c.pr.hq; ++h)
    for (std::int64_t x = 0; x < clusters; ++x) mu.set(h, x, &c.q.view(0, h, row(rng), 0));
  return mu;
}

/// Cosines of rows (n, d) with unit centroid mu, in fp64.
std::vector<double> cosines(const std::vector<std::vector<double>>& rows, const float* mu) {
  std::vector<double> out;
  for (const auto& r : rows) {
    double dot = 0, norm = 0;
    for (std::size_t y = 0; y < r.size(); ++y) dot += mu[y] * r[y], norm += r[y] * r[y];
    out.push_back(dot / std::sqrt(norm));
  }
  return out;
}

/// members holds w of the rows, and every row scoring clearly above the w-th best
/// score is in, every row clearly below is out (fp32 scoring may order near-ties otherwise).
void expect_top(const std::vector<double>& score, const std::vector<std::int64_t>& members, std::int64_t w) {
  std::vector<double> sorted = score;
  std::sort(sorted.rbegin(), sorted.rend());
  const std::int64_t k = std::min<std::int64_t>(w, static_cast<std::int64_t>(score.size()));
  ASSERT_EQ(static_cast<std::int64_t>(members.size()), k);
  const double edge = sorted[static_cast<std::size_t>(k - 1)];
  for (std::size_t i = 0; i < score.size(); ++i) {
    const bool in = std::binary_search(members.begin(), members.end(), static_cast<std::int64_t>(i));
    if (score[i] > edge + 1e-5) {
      EXPECT_TRUE(in) << "row " << i;
    }
    if (score[i] < edge - 1e-5) {
      EXPECT_FALSE(in) << "row " << i;
    }
  }
}

/// Checks o and lse of routing attention (causal, default positions) against the
/// fp64 attention of each cluster route() forms (route() itself is checked
/// against fp64 scoring in RoutingPicksTheBestScoringMembers).
void expect_routing_matches(const case_f32& c, const routing_centroids& mu, const routing_options& opt) {
  const problem& pr = c.pr;
  double worst = 0, lse_worst = 0;
  for (std::int64_t b = 0; b < pr.b; ++b)
    for (std::int64_t h = 0; h < pr.hq; ++h) {
      const std::int64_t hk = h / (pr.hq / pr.hkv);
      std::vector<std::vector<double>> qs(static_cast<std::size_t>(pr.sq)), ks(static_cast<std::size_t>(pr.skv));
      for (std::int64_t i = 0; i < pr.sq; ++i)
        for (std::int64_t y = 0; y < pr.d; ++y) qs[static_cast<std::size_t>(i)].push_back(c.q.view(b, h, i, y));
      for (std::int64_t j = 0; j < pr.skv; ++j)
        for (std::int64_t y = 0; y < pr.d; ++y) ks[static_cast<std::size_t>(j)].push_back(c.k.view(b, hk, j, y));
      std::vector<std::vector<double>> o(static_cast<std::size_t>(pr.sq), std::vector<double>(static_cast<std::size_t>(pr.dv), 0.0));
      std::vector<double> lse(static_cast<std::size_t>(pr.sq), -std::numeric_limits<double>::infinity());
      const std::vector<routing_members> routed = route(c.q.cview(), c.k.cview(), mu, b, h, opt);
      for (std::int64_t x = 0; x < mu.clusters(); ++x) {
        const std::vector<std::int64_t>& mq = routed[static_cast<std::size_t>(x)].queries;
        const std::vector<std::int64_t>& mk = routed[static_cast<std::size_t>(x)].keys;
        for (std::int64_t i : mq) {
          const std::int64_t p = pr.skv - pr.sq + i;
          std::vector<double> s;
          double best = -std::numeric_limits<double>::infinity();
          for (std::int64_t j : mk) {
            double dot = 0;
            for (std::int64_t y = 0; y < pr.d; ++y) dot += qs[static_cast<std::size_t>(i)][static_cast<std::size_t>(y)] * ks[static_cast<std::size_t>(j)][static_cast<std::size_t>(y)];
            s.push_back(j <= p ? dot / std::sqrt(double(pr.d)) : -std::numeric_limits<double>::infinity());
            best = std::max(best, s.back());
          }
          if (std::isinf(best)) continue;  // nothing visible in this cluster: the identity of the merge
          double z = 0;
          std::vector<double> part(static_cast<std::size_t>(pr.dv), 0.0);
          for (std::size_t t = 0; t < mk.size(); ++t) {
            const double e = std::exp(s[t] - best);
            z += e;
            for (std::int64_t y = 0; y < pr.dv; ++y) part[static_cast<std::size_t>(y)] += e * c.v.view(b, hk, mk[t], y);
          }
          const double l = best + std::log(z), m = std::max(lse[static_cast<std::size_t>(i)], l);
          const double wa = std::exp(lse[static_cast<std::size_t>(i)] - m), wb = std::exp(l - m);
          for (std::int64_t y = 0; y < pr.dv; ++y) {
            double& out = o[static_cast<std::size_t>(i)][static_cast<std::size_t>(y)];
            out = (wa * out + wb * part[static_cast<std::size_t>(y)] / z) / (wa + wb);
          }
          lse[static_cast<std::size_t>(i)] = m + std::log(wa + wb);
        }
      }
      for (std::int64_t i = 0; i < pr.sq; ++i) {
        for (std::int64_t y = 0; y < pr.dv; ++y)
          worst = std::max(worst, std::abs(c.o.view(b, h, i, y) - o[static_cast<std::size_t>(i)][static_cast<std::size_t>(y)]));
        const double r = lse[static_cast<std::size_t>(i)];
        if (std::isinf(r))
          EXPECT_EQ(c.lse(b, h, i), r) << "row " << i;
        else
          lse_worst = std::max(lse_worst, std::abs(c.lse(b, h, i) - r) / std::max(1.0, std::abs(r)));
      }
    }
  EXPECT_LE(worst, 1e-5);
  EXPECT_LE(lse_worst, 1e-5);
}

TEST(Routing, EqualsClusterAttentionMergedByLse) {
  seeded_rng seeded;
  on_every_backend([&](auto backend) {
    for (const problem& pr : {problem{2, 4, 2, 100, 100, 16, 16}, problem{1, 2, 1, 37, 37, 8, 12}})
      for (std::int64_t clusters : {1, 4, 10})
        for (std::int64_t w : {std::int64_t{0}, std::int64_t{9}, pr.skv}) {
          case_f32 c(pr, seeded.rng);
          const routing_centroids mu = sample_centroids(c, clusters, seeded.rng);
          routing_options o;
          o.window = w;
          auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
          a.params = causal_params();
          a.lse = c.lse.view();
          routing_attention(a, mu, o, backend);
          expect_routing_matches(c, mu, o);
        }
  });
}

TEST(Routing, ClustersOfEveryTokenAreDenseCausalAttention) {
  seeded_rng seeded;
  const problem pr{1, 4, 2, 64, 64, 16, 16};
  for (std::int64_t clusters : {1, 3}) {
    case_f32 c(pr, seeded.rng);
    routing_options o;
    o.window = pr.skv;
    auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
    a.params = causal_params();
    a.lse = c.lse.view();
    routing_attention(a, sample_centroids(c, clusters, seeded.rng), o, reference{});
    const reference_result ref = c.oracle(a.params);
    const error_stats e = compare_output(c.o.view, ref);
    EXPECT_TRUE(e.within(1e-5)) << "clusters " << clusters << " rel_l2 " << e.rel_l2;
    for (std::int64_t h = 0; h < pr.hq; ++h)  // each token in every cluster: the lse counts its state `clusters` times
      EXPECT_NEAR(c.lse(0, h, 5), ref.row_lse(0, h, 5) + std::log(double(clusters)), 1e-5);
  }
}

TEST(Routing, ClustersHoldTheWindowBestMembersInOrder) {
  seeded_rng seeded;
  const problem pr{1, 2, 1, 50, 80, 8, 8};
  case_f32 c(pr, seeded.rng);
  const routing_centroids mu = sample_centroids(c, 6, seeded.rng);
  routing_options o;
  o.window = 12;
  for (std::int64_t h = 0; h < pr.hq; ++h) {
    const std::vector<routing_members> m = route(c.q.cview(), c.k.cview(), mu, 0, h, o);
    ASSERT_EQ(m.size(), 6u);
    std::vector<std::vector<double>> qs(static_cast<std::size_t>(pr.sq)), ks(static_cast<std::size_t>(pr.skv));
    for (std::int64_t i = 0; i < pr.sq; ++i)
      for (std::int64_t y = 0; y < pr.d; ++y) qs[static_cast<std::size_t>(i)].push_back(c.q.view(0, h, i, y));
    for (std::int64_t j = 0; j < pr.skv; ++j)
      for (std::int64_t y = 0; y < pr.d; ++y) ks[static_cast<std::size_t>(j)].push_back(c.k.view(0, 0, j, y));
    for (std::int64_t x = 0; x < 6; ++x) {
      const routing_members& cm = m[static_cast<std::size_t>(x)];
      EXPECT_TRUE(std::adjacent_find(cm.queries.begin(), cm.queries.end(), std::greater_equal<std::int64_t>()) ==
                  cm.queries.end());
      EXPECT_TRUE(std::adjacent_find(cm.keys.begin(), cm.keys.end(), std::greater_equal<std::int64_t>()) == cm.keys.end());
      expect_top(cosines(qs, &mu.mu(h, x, 0)), cm.queries, 12);
      expect_top(cosines(ks, &mu.mu(h, x, 0)), cm.keys, 12);
    }
  }
}

TEST(Routing, TheKMeansStepMovesCentroidsAsSpecified) {
  seeded_rng seeded;
  const std::int64_t d = 8, n = 200;
  tensor<float, 2> x({n, d});
  fill_normal(x.data(), x.size(), seeded.rng);
  for (std::int64_t i = 0; i < x.size(); ++i) x.data()[i] = std::abs(x.data()[i]);  // every vector in one orthant
  routing_centroids mu(1, 3, d);
  for (std::int64_t c = 0; c < 3; ++c) mu.set(0, c, &x(c, 0));
  // A centroid in the opposite orthant (the negated sum) gets no member and stays.
  std::vector<float> away(d, 0.0f);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t y = 0; y < d; ++y) away[static_cast<std::size_t>(y)] -= x(i, y);
  routing_centroids lonely(1, 1, d);
  lonely.set(0, 0, away.data());
  routing_centroids with_lonely(1, 4, d);
  for (std::int64_t c = 0; c < 3; ++c) with_lonely.set(0, c, &mu.mu(0, c, 0));
  with_lonely.set(0, 3, away.data());
  // decay 0: each centroid becomes the normalized sum of its members' unit vectors.
  routing_centroids next(1, 3, d);
  std::copy(mu.mu.data(), mu.mu.data() + mu.mu.size(), next.mu.data());
  next.update(0, x.cview(), 0.0f);
  for (std::int64_t c = 0; c < 3; ++c) {
    std::vector<double> sum(d, 0.0);
    for (std::int64_t i = 0; i < n; ++i) {
      if (mu.nearest(0, &x(i, 0)) != c) continue;
      double norm = 0;
      for (std::int64_t y = 0; y < d; ++y) norm += double(x(i, y)) * x(i, y);
      for (std::int64_t y = 0; y < d; ++y) sum[static_cast<std::size_t>(y)] += x(i, y) / std::sqrt(norm);
    }
    double sn = 0;
    for (double v : sum) sn += v * v;
    for (std::int64_t y = 0; y < d; ++y) EXPECT_NEAR(next.mu(0, c, y), sum[static_cast<std::size_t>(y)] / std::sqrt(sn), 1e-5);
  }
  // decay 0.999: unit norm kept; the lonely centroid unchanged.
  with_lonely.update(0, x.cview(), 0.999f);
  for (std::int64_t c = 0; c < 4; ++c) {
    double norm = 0;
    for (std::int64_t y = 0; y < d; ++y) norm += double(with_lonely.mu(0, c, y)) * with_lonely.mu(0, c, y);
    EXPECT_NEAR(norm, 1.0, 1e-5) << c;
  }
  for (std::int64_t y = 0; y < d; ++y) EXPECT_EQ(with_lonely.mu(0, 3, y), lonely.mu(0, 0, y));
}

TEST(Routing, PlantedPairsAreRoutedTogether) {
  // Keys that copy a query's direction should share a cluster with it.
  seeded_rng seeded;
  const problem pr{1, 1, 1, 1024, 1024, 32, 32};
  case_f32 c(pr, seeded.rng);
  std::uniform_int_distribution<std::int64_t> row(0, pr.sq - 1);
  std::vector<std::pair<std::int64_t, std::int64_t>> pairs;
  for (int x = 0; x < 32; ++x) {
    const std::int64_t i = row(seeded.rng), j = row(seeded.rng);
    for (std::int64_t y = 0; y < pr.d; ++y) c.k.view(0, 0, j, y) = c.q.view(0, 0, i, y);
    pairs.push_back({i, j});
  }
  routing_centroids mu = sample_centroids(c, 32, seeded.rng);  // sqrt(n) clusters of sqrt(n) members
  for (int step = 0; step < 10; ++step) {
    mu.update(0, tensor_view<const float, 2>(&c.q.view(0, 0, 0, 0), {pr.sq, pr.d}), 0.5f);
    mu.update(0, tensor_view<const float, 2>(&c.k.view(0, 0, 0, 0), {pr.skv, pr.d}), 0.5f);
  }
  const std::vector<routing_members> m = route(c.q.cview(), c.k.cview(), mu, 0, 0);
  int together = 0;
  for (const auto& [i, j] : pairs) {
    bool found = false;
    for (const routing_members& cm : m)
      found = found || (std::binary_search(cm.queries.begin(), cm.queries.end(), i) &&
                        std::binary_search(cm.keys.begin(), cm.keys.end(), j));
    together += found;
  }
  std::printf("Routing planted-pair recall: %d / %zu\n", together, pairs.size());
  EXPECT_GE(together, static_cast<int>(pairs.size()) / 2);
}

}  // namespace
}  // namespace attnkit::test
