// Eviction policies against the invariants of their papers: a synthetic stream
// (prefill, then decode steps) drives each policy the way an engine would:
// append, cached_attention with key weights, observe, evict. Selections are
// checked against brute-force recomputations from the observed weights, and
// scores against the fp64 oracle.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/cached_attention.hpp"
#include "attnkit/kv/evict.hpp"
#include "attnkit/kv/policy/a2sf.hpp"
#include "attnkit/kv/policy/duo.hpp"
#include "attnkit/kv/policy/h2o.hpp"
#include "attnkit/kv/policy/snapkv.hpp"
#include "attnkit/kv/policy/streaming.hpp"
#include "attnkit/kv/policy/tova.hpp"
#include "support/expect_error.hpp"
#include "support/paged_copy.hpp"
#include "support/random.hpp"
#include "support/reference_attention.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

constexpr std::int64_t hkv = 2, hq = 4, d = 16;

/// One sequence's cache and the inputs of every step, replayable: two streams
/// built on the same seed see the same tokens.
struct stream {
  std::mt19937_64 rng;
  kv_cache<float> cache;
  std::vector<std::vector<float>> k_all, v_all;  // per head: every appended row, by position
  tensor<float, 3> weights;                      // (1, hkv, longest) of the last call
  tensor<float, 4> q, out;                       // (1, hq, sq, d) of the last call

  stream(std::uint64_t seed, std::int64_t capacity, position_mode mode = position_mode::original)
      : rng(seed), cache(options(capacity, mode)), k_all(hkv), v_all(hkv) {}

  static kv_cache_options options(std::int64_t capacity, position_mode mode) {
    kv_cache_options o;
    o.hkv = hkv;
    o.d = d;
    o.capacity = capacity;
    o.positions = mode;
    return o;
  }

  /// Appends sq tokens, attends with sq queries (causal), observes and evicts.
  /// row_weights: the policy's weighting of the call's rows (empty: all 1).
  template <class Policy>
  bool step(Policy& policy, std::int64_t sq, const std::vector<float>& row_weights = {}) {
    tensor<float, 3> k({hkv, sq, d}), v({hkv, sq, d});
    fill_normal(k.data(), k.size(), rng);
    fill_normal(v.data(), v.size(), rng);
    for (std::int64_t h = 0; h < hkv; ++h) {
      k_all[h].insert(k_all[h].end(), &k(h, 0, 0), &k(h, 0, 0) + sq * d);
      v_all[h].insert(v_all[h].end(), &v(h, 0, 0), &v(h, 0, 0) + sq * d);
    }
    cache.append(k.cview(), v.cview());
    q = tensor<float, 4>({1, hq, sq, d});
    fill_normal(q.data(), q.size(), rng, 0.0f, 2.0f);  // peaked attention, so scores differ
    out = tensor<float, 4>({1, hq, sq, d});
    weights = tensor<float, 3>({1, hkv, cache.index().max_length()});
    key_weights kw{weights.view(), {}};
    if (!row_weights.empty()) kw.row_weights = tensor_view<const float, 1>(row_weights.data(), {sq});
    attention_params params;
    params.causal = true;
    cached_attention(q.cview(), cache, out.view(), params, {}, kw, cpu<xsimd::default_arch>{two_threads()});
    policy.observe(cache.index(), weights2d(), sq);
    return evict(cache, policy);
  }

  /// The fp64 oracle of the last call over every row ever appended (nothing evicted).
  reference_result oracle(const attention_params& params) const {
    const std::int64_t n = static_cast<std::int64_t>(k_all[0].size()) / d;
    tensor<float, 4> k({1, hkv, n, d}), v({1, hkv, n, d});
    for (std::int64_t h = 0; h < hkv; ++h) {
      std::copy(k_all[h].begin(), k_all[h].end(), &k(0, h, 0, 0));
      std::copy(v_all[h].begin(), v_all[h].end(), &v(0, h, 0, 0));
    }
    return reference_attention(q.cview(), k.cview(), v.cview(), params);
  }

  tensor_view<const float, 2> weights2d() const {
    return tensor_view<const float, 2>(weights.data(), {hkv, weights.extent(2)});
  }

  /// Original positions each head holds.
  std::vector<std::vector<std::int64_t>> held() const {
    std::vector<std::vector<std::int64_t>> p;
    for (std::int64_t h = 0; h < hkv; ++h) p.push_back(cache.index().positions(h));
    return p;
  }
};

std::vector<std::int64_t> range(std::int64_t a, std::int64_t b) {
  std::vector<std::int64_t> r(static_cast<std::size_t>(std::max<std::int64_t>(0, b - a)));
  std::iota(r.begin(), r.end(), a);
  return r;
}

/// Brute force: protected rows, then the best by score (ties to the lower row), sorted.
std::vector<std::int64_t> brute_top(std::int64_t n, std::int64_t budget, std::int64_t sinks, std::int64_t recent,
                                    const std::vector<float>& score) {
  if (n <= budget) return range(0, n);
  std::vector<std::int64_t> keep, rest;
  for (std::int64_t j = 0; j < n; ++j) (j < sinks || j >= n - recent ? keep : rest).push_back(j);
  std::stable_sort(rest.begin(), rest.end(), [&](std::int64_t a, std::int64_t b) { return score[a] > score[b]; });
  rest.resize(static_cast<std::size_t>(budget - static_cast<std::int64_t>(keep.size())));
  keep.insert(keep.end(), rest.begin(), rest.end());
  std::sort(keep.begin(), keep.end());
  return keep;
}

TEST(KeepTop, MatchesBruteForceWithTiesToTheLowerRow) {
  seeded_rng seeded;
  for (int trial = 0; trial < 50; ++trial) {
    const std::int64_t n = 1 + seeded.rng() % 200, sinks = seeded.rng() % 5, recent = seeded.rng() % 9;
    const std::int64_t budget = sinks + recent + seeded.rng() % 40;
    token_index index(1, position_mode::original);
    index.append(n);
    std::vector<float> score(static_cast<std::size_t>(n));
    for (auto& s : score) s = static_cast<float>(seeded.rng() % 7);  // many ties
    const auto got = keep_top(index, 0, budget, protection{sinks, recent, {}}, [&](std::int64_t j) { return score[j]; });
    EXPECT_EQ(got, brute_top(n, budget, sinks, recent, score)) << "n " << n << " budget " << budget;
  }
  token_index index(1, position_mode::original);
  index.append(10);
  const auto flat = keep_top(index, 0, 5, protection{1, 1, {5}}, [](std::int64_t) { return 1.0f; });
  EXPECT_EQ(flat, (std::vector<std::int64_t>{0, 1, 2, 5, 9}));  // sink, pinned, recent; the tie goes to rows 1, 2
}

TEST(StreamingLlm, KeepsExactlySinksAndRecent) {
  seeded_rng seeded;
  for (position_mode mode : {position_mode::original, position_mode::in_cache}) {
    stream s(seeded.seed, 64, mode);
    streaming_llm policy({4, 20, 0, {}});
    s.step(policy, 10);
    for (std::int64_t n = 11; n <= 200; ++n) {
      s.step(policy, 1);
      std::vector<std::int64_t> want = range(0, std::min<std::int64_t>(n, 4));
      for (auto j : range(std::max<std::int64_t>(4, n - 20), n)) want.push_back(j);
      for (std::int64_t h = 0; h < hkv; ++h) {
        const auto& held = s.cache.index().positions(h);
        if (mode == position_mode::original) {
          ASSERT_EQ(held, want) << "step " << n;
        } else {
          ASSERT_EQ(held, range(0, static_cast<std::int64_t>(want.size()))) << "step " << n;
        }
      }
    }
  }
}

/// Size, recent window and no resurrection, for any budget policy, over a stream.
template <class Policy>
void expect_budget_invariants(Policy& policy, std::int64_t budget, std::int64_t recent, std::uint64_t seed) {
  stream s(seed, budget + 100);
  s.step(policy, 80);
  auto before = s.held();
  for (std::int64_t n = 81; n <= 300; ++n) {
    s.step(policy, 1);
    const auto now = s.held();
    for (std::int64_t h = 0; h < hkv; ++h) {
      ASSERT_EQ(static_cast<std::int64_t>(now[h].size()), std::min(n, budget)) << "step " << n;
      for (auto j : range(n - recent, n)) ASSERT_TRUE(std::binary_search(now[h].begin(), now[h].end(), j));
      for (auto j : now[h])
        ASSERT_TRUE(j == n - 1 || std::binary_search(before[h].begin(), before[h].end(), j)) << "row " << j << " came back";
    }
    // Each query row's probabilities sum to 1, so a step adds `group` per KV head.
    for (std::int64_t h = 0; h < hkv; ++h) {
      double sum = 0;
      for (std::int64_t j = 0; j < s.weights.extent(2); ++j) sum += s.weights(0, h, j);
      ASSERT_NEAR(sum, hq / hkv, 1e-5);
    }
    before = now;
  }
}

TEST(H2o, BudgetRecentAndNoResurrection) {
  seeded_rng seeded;
  h2o policy({48, 0, 16, 0, {}});
  expect_budget_invariants(policy, 48, 16, seeded.seed);
  h2o window({16, 0, 16, 0, {}});  // no heavy hitters: a sliding window
  stream s(seeded.seed, 200);
  for (std::int64_t n = 1; n <= 60; ++n) s.step(window, 1);
  EXPECT_EQ(s.held()[0], range(44, 60));
}

TEST(A2sf, AlphaOneIsH2oStepForStep) {
  seeded_rng seeded;
  budget_options o{40, 2, 8, 0, {}};
  h2o heavy(o);
  a2sf decayed(o, 1.0f);
  stream a(seeded.seed, 200), b(seeded.seed, 200);
  a.step(heavy, 70);
  b.step(decayed, 70, a2sf::row_weights(1.0f, 70));
  for (int t = 0; t < 150; ++t) {
    a.step(heavy, 1);
    b.step(decayed, 1);
    ASSERT_EQ(a.held(), b.held()) << "step " << t;
  }
  expect_budget_invariants(decayed, 40, 8, seeded.seed);
}

TEST(A2sf, AlphaZeroSelectsByTheLastRowOnly) {
  seeded_rng seeded;
  a2sf policy({30, 1, 4, 0, {}}, 0.0f);
  stream s(seeded.seed, 200);
  s.step(policy, 50, a2sf::row_weights(0.0f, 50));
  for (int t = 0; t < 100; ++t) {
    // Recompute this step's selection from its weights alone, then let the policy evict.
    const auto before = s.held();
    s.step(policy, 1);
    for (std::int64_t h = 0; h < hkv; ++h) {
      const std::int64_t n = static_cast<std::int64_t>(before[h].size()) + 1;
      std::vector<float> last(s.weights.data() + h * s.weights.extent(2), s.weights.data() + h * s.weights.extent(2) + n);
      std::vector<std::int64_t> want;
      for (auto r : brute_top(n, 30, 1, 4, last)) want.push_back(r + 1 == n ? before[h].back() + 1 : before[h][r]);
      ASSERT_EQ(s.held()[h], want) << "step " << t << " head " << h;
    }
  }
}

TEST(A2sf, RecurrenceEqualsClosedFormFromTheOracle) {
  seeded_rng seeded;
  const float alpha = 0.7f;
  a2sf policy({1000, 0, 0, 0, {}}, alpha);  // never evicts: scores line up with positions
  stream s(seeded.seed, 1000);
  std::vector<std::vector<double>> closed(hkv);
  // Each call folded into the closed form with its rows' fp64 probabilities.
  const auto run = [&](std::int64_t sq) {
    s.step(policy, sq, a2sf::row_weights(alpha, sq));
    attention_params params;
    params.causal = true;
    const reference_result ref = s.oracle(params);
    for (std::int64_t h = 0; h < hkv; ++h) {
      for (auto& x : closed[h]) x *= std::pow(alpha, static_cast<double>(sq));
      closed[h].resize(static_cast<std::size_t>(ref.skv), 0.0);
      for (std::int64_t g = h * hq / hkv; g < (h + 1) * hq / hkv; ++g)
        for (std::int64_t i = 0; i < sq; ++i)
          for (std::int64_t j = 0; j < ref.skv; ++j) closed[h][j] += std::pow(alpha, sq - 1.0 - i) * ref.prob(0, g, i, j);
    }
  };
  run(24);
  for (int t = 0; t < 12; ++t) run(t % 3 == 0 ? 3 : 1);
  for (std::int64_t h = 0; h < hkv; ++h)
    for (std::size_t j = 0; j < closed[h].size(); ++j)
      ASSERT_NEAR(policy.scores()(h, static_cast<std::int64_t>(j)), closed[h][j], 1e-5 * std::max(1.0, closed[h][j]));
}

TEST(Duo, SparsityCountsTiesAndThreshold) {
  const duo_gates g(2, 4, {0.9f, 0.1f, 0.5f, 0.5f, 0.1f, 1.0f, 0.5f, 0.0f});
  for (double s : {0.0, 0.25, 0.5, 0.6, 1.0})
    EXPECT_EQ(duo_heads::by_sparsity(g, s).streaming_count(), std::llround(s * 8));
  // Three streaming heads: gate 0.0 (1,3), then the two 0.1s in (layer, head) order.
  EXPECT_EQ(duo_heads::by_sparsity(g, 3.0 / 8).retrieval, (std::vector<char>{1, 0, 1, 1, 0, 1, 1, 0}));
  // Four: the next lowest is the first 0.5, at (0, 2).
  EXPECT_EQ(duo_heads::by_sparsity(g, 0.5).retrieval, (std::vector<char>{1, 0, 0, 1, 0, 1, 1, 0}));
  EXPECT_EQ(duo_heads::by_threshold(g, 0.5f).retrieval, (std::vector<char>{1, 0, 1, 1, 0, 1, 1, 0}));
  EXPECT_EQ(duo_heads::by_threshold(g, 0.5f).layer(1), (std::vector<char>{0, 1, 1, 0}));
}

TEST(Duo, GatesFileLoads) {
  const std::string path = ::testing::TempDir() + "duo_gates.tsv";
  std::ofstream(path) << "1.0\t0.25\n0.5 0\n\n";
  const duo_gates g = duo_gates::load(path);
  EXPECT_EQ(g.layers, 2);
  EXPECT_EQ(g.heads, 2);
  EXPECT_EQ(g.values, (std::vector<float>{1.0f, 0.25f, 0.5f, 0.0f}));
  std::ofstream(path) << "1.0\t0.25\n0.5\n";
  expect_error([&] { duo_gates::load(path); },
               "attnkit: duo_gates::load: " + path + " line 2 has 1 gates, the first line 2");
  std::ofstream(path) << "1.0\tx\n";
  expect_error([&] { duo_gates::load(path); },
               "attnkit: duo_gates::load: " + path + " line 1 has a field that is not a number");
  std::remove(path.c_str());
}

TEST(Duo, MixedHeadsAreStreamingAndFullInOneCall) {
  seeded_rng seeded;
  const std::int64_t sinks = 4, recent = 16;
  duo_attention policy({1, 0}, {sinks, recent, 0});  // KV head 0 retrieval, 1 streaming
  stream s(seeded.seed, 400);
  s.step(policy, 30);
  for (std::int64_t n = 31; n <= 150; ++n) {
    s.step(policy, 1);
    ASSERT_EQ(s.held()[0], range(0, n));
    std::vector<std::int64_t> want = range(0, sinks);
    for (auto j : range(n - recent, n)) want.push_back(j);
    ASSERT_EQ(s.held()[1], want);
  }
  // The next step attends before it evicts: the streaming head sees its sinks and
  // last recent + 1 rows, which is the full KV under the Lambda mask (sinks + window).
  s.step(policy, 1);
  attention_params full, lambda;
  full.causal = lambda.causal = true;
  lambda.window_left = recent;
  lambda.sinks = sinks;
  const reference_result want_full = s.oracle(full), want_lambda = s.oracle(lambda);
  for (std::int64_t h = 0; h < hq; ++h) {
    const reference_result& want = h < hq / hkv ? want_full : want_lambda;
    for (std::int64_t x = 0; x < d; ++x) ASSERT_NEAR(s.out(0, h, 0, x), want.out(0, h, 0, x), 1e-5) << "head " << h;
  }
}

TEST(Duo, SparsityOneIsStreamingLlmAtOriginalPositions) {
  seeded_rng seeded;
  const duo_gates g(1, hkv, {0.3f, 0.7f});
  duo_attention duo(duo_heads::by_sparsity(g, 1.0).layer(0), {4, 24, 0});
  streaming_llm sinks({4, 24, 0, {}});
  stream a(seeded.seed, 200), b(seeded.seed, 200);
  a.step(duo, 40);
  b.step(sinks, 40);
  for (int t = 0; t < 60; ++t) {
    a.step(duo, 1);
    b.step(sinks, 1);
    ASSERT_EQ(a.held(), b.held());
    ASSERT_EQ(std::memcmp(a.out.data(), b.out.data(), sizeof(float) * a.out.size()), 0);
  }
}

TEST(SnapKv, KeepsTheWindowAndThePooledTopOnce) {
  seeded_rng seeded;
  for (snapkv_pooling pooling : {snapkv_pooling::avg, snapkv_pooling::max}) {
    snapkv policy({64, 16, 5, pooling});
    stream s(seeded.seed, 400);
    const std::int64_t n = 200;
    ASSERT_TRUE(s.step(policy, n, policy.window_row_weights(n)));
    for (std::int64_t h = 0; h < hkv; ++h) {
      std::vector<float> pooled(n, 0.0f);
      for (std::int64_t j = 0; j < n - 16; ++j) {
        float acc = pooling == snapkv_pooling::avg ? 0.0f : -INFINITY;
        for (std::int64_t t = std::max<std::int64_t>(0, j - 2); t <= std::min<std::int64_t>(n - 17, j + 2); ++t)
          acc = pooling == snapkv_pooling::avg ? acc + s.weights(0, h, t) : std::max(acc, s.weights(0, h, t));
        pooled[j] = pooling == snapkv_pooling::avg ? acc / 5 : acc;
      }
      EXPECT_EQ(s.held()[h], brute_top(n, 64, 0, 16, pooled));
    }
    for (int t = 0; t < 20; ++t) EXPECT_FALSE(s.step(policy, 1));  // decode rows are never evicted
    EXPECT_EQ(s.cache.index().length(0), 84);
  }
}

TEST(Tova, OneSetPerLayerFromTheLastRow) {
  seeded_rng seeded;
  tova policy({32, 0, {}});
  stream s(seeded.seed, 200);
  s.step(policy, 60, tova::last_row_weights(60));
  EXPECT_EQ(s.cache.index().length(0), 32);
  for (int t = 0; t < 50; ++t) {
    const auto before = s.held()[0];
    s.step(policy, 1);
    std::vector<float> layer(33, 0.0f);
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t j = 0; j < 33; ++j) layer[j] += s.weights(0, h, j);
    std::vector<std::int64_t> want;
    for (auto r : brute_top(33, 32, 0, 0, layer)) want.push_back(r == 32 ? 60 + t : before[r]);
    ASSERT_EQ(s.held()[0], want) << "step " << t;
    ASSERT_EQ(s.held()[1], want);
  }
}

TEST(Policies, WithinBudgetKeepEverythingAndMatchFullAttentionBitForBit) {
  seeded_rng seeded;
  const auto full = [&](auto policy, const char* name) {
    SCOPED_TRACE(name);
    stream s(seeded.seed, 200), plain(seeded.seed, 200);
    streaming_llm never({0, 1000, 0, {}});
    for (std::int64_t sq : {20, 1, 1, 3, 1}) {
      EXPECT_FALSE(s.step(policy, sq));
      plain.step(never, sq);
      ASSERT_EQ(std::memcmp(s.out.data(), plain.out.data(), sizeof(float) * s.out.size()), 0);
    }
    EXPECT_EQ(s.cache.index().length(0), 26);
  };
  full(streaming_llm({4, 100, 0, {}}), "streaming");
  full(h2o({100, 0, 10, 0, {}}), "h2o");
  full(a2sf({100, 4, 10, 0, {}}, 0.5f), "a2sf");
  full(duo_attention(duo_heads::by_sparsity(duo_gates(1, hkv, {0.2f, 0.9f}), 0.0).layer(0), {4, 8, 0}), "duo s=0");
  full(snapkv({100, 8, 5, snapkv_pooling::avg}), "snapkv");
  full(tova({100, 0, {}}), "tova");
}

TEST(Policies, BadOptionsAreClearErrors) {
  expect_error([] { h2o({10, 4, 8, 0, {}}); }, "attnkit: h2o: budget = 10 must be >= sinks + recent = 12");
  expect_error([] { a2sf({10, 4, 8, 0, {}}, 0.5f); }, "attnkit: a2sf: budget = 10 must be >= sinks + recent = 12");
  expect_error([] { a2sf({20, 0, 8, 0, {}}, 1.5f); }, "attnkit: a2sf: alpha must be in [0, 1], got 1.5");
  expect_error([] { a2sf({20, 0, 8, 0, {}}, std::nanf("")); }, "attnkit: a2sf: alpha must be in [0, 1], got nan");
  expect_error([] { tova({4, 0, protection{2, 3, {}}}); }, "attnkit: tova: budget = 4 must be >= sinks + recent = 5");
  expect_error([] { snapkv({16, 32, 5, snapkv_pooling::avg}); },
               "attnkit: snapkv: window >= 1 and budget >= window required, got 32 and 16");
  expect_error([] { streaming_llm({4, 0, 0, {}}); },
               "attnkit: streaming_llm: recent must be in [1, 2^31), got 0");
  expect_error([] { duo_gates(2, 3, {0.1f, 0.2f}); }, "attnkit: duo_gates: expected layers * heads = 2 * 3 gates, got 2");
  duo_attention three_heads({1, 0, 1}, {});
  token_index two(2, position_mode::original);
  expect_error([&] { three_heads.select(two); }, "attnkit: duo_attention: 3 head flags for a cache of 2 KV heads");
}

}  // namespace
}  // namespace attnkit::test
