// hip_layout against the spec's invariants: a budget covering every candidate
// is the full causal layout and attention over it equals dense causal
// attention (H1); lists are ascending, unique, in range and as long as the
// budget (H2); a planted unimodal score profile has its peak's block selected
// (H4); lists do not depend on the thread count (H5); and they equal a naive
// search written here from the spec's text (H6). Recall of planted bumps of
// high scores is measured and printed.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/sparse/hip.hpp"
#include "support/attention_case.hpp"
#include "support/paged_copy.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

using case_f32 = attention_case<float, float, float, float>;

hip_options options(std::int64_t top_k, std::int64_t block_q, std::int64_t block_k, std::int64_t sinks,
                    std::int64_t window, std::int64_t reduce_stride = 2) {
  hip_options o;
  o.top_k = top_k;
  o.block_q = block_q;
  o.block_k = block_k;
  o.sinks = sinks;
  o.window = window;
  o.reduce_stride = reduce_stride;
  return o;
}

std::vector<std::int64_t> list_of(const owned_layout& l, std::int64_t b, std::int64_t g, std::int64_t qb) {
  return {l.first(b, g, qb), l.last(b, g, qb)};
}

/// The search of the spec (§1.1) for one query block, naively: branches as
/// (start, end) pairs re-sorted each round; scores recomputed in double.
std::vector<std::int64_t> naive_search(const case_f32& c, std::int64_t b, std::int64_t h, std::int64_t i0,
                                       std::int64_t i1, std::int64_t candidates, const hip_options& o) {
  const std::int64_t n = (candidates + o.block_k - 1) / o.block_k, kk = (o.top_k + o.block_k - 1) / o.block_k;
  std::vector<std::int64_t> out;
  if (n <= kk) {
    for (std::int64_t x = 0; x < n; ++x) out.push_back(x);
    return out;
  }
  const auto score = [&](std::int64_t s, std::int64_t e) {
    const std::int64_t lo = s * o.block_k, hi = std::min(e * o.block_k, candidates);
    const std::int64_t j = o.representative == hip_representative::first ? lo : lo + (hi - lo) / 2;
    double best = -1e300;
    for (std::int64_t i = i0; i < i1; i += o.reduce_stride) {
      double dot = 0;
      for (std::int64_t x = 0; x < c.pr.d; ++x) dot += double(c.q.view(b, h, i, x)) * double(c.k.view(b, h * c.pr.hkv / c.pr.hq, j, x));
      best = std::max(best, dot);
    }
    return best;
  };
  struct br {
    std::int64_t s, e;
    double score;
  };
  std::vector<br> cur;
  for (std::int64_t x = 0; x < kk; ++x) cur.push_back({x * n / kk, (x + 1) * n / kk, 0});
  for (;;) {
    bool wide = false;
    for (const br& x : cur) wide = wide || x.e - x.s > 1;
    if (!wide) break;
    std::vector<br> next;
    for (const br& x : cur) {
      const std::int64_t mid = x.s + (x.e - x.s) / 2;
      if (mid > x.s) next.push_back({x.s, mid, score(x.s, mid)});
      next.push_back({mid, x.e, score(mid, x.e)});
    }
    std::stable_sort(next.begin(), next.end(), [](const br& a, const br& z) { return a.score > z.score; });
    next.resize(static_cast<std::size_t>(kk));
    cur = next;
  }
  for (const br& x : cur) out.push_back(x.s);
  std::sort(out.begin(), out.end());
  return out;
}

TEST(Hip, ListsEqualANaiveSearch) {
  seeded_rng seeded;
  const problem pr{2, 4, 2, 256, 256, 16, 16};
  case_f32 c(pr, seeded.rng);
  const attention_params params = causal_params();
  for (auto rep : {hip_representative::first, hip_representative::center})
    for (const hip_options& base : {options(24, 32, 4, 8, 16), options(40, 17, 3, 0, 0, 3), options(8, 64, 1, 0, 5, 1)}) {
      hip_options o = base;
      o.representative = rep;
      auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
      a.params = params;
      const owned_layout l = hip_layout(a, o);
      for (std::int64_t b = 0; b < pr.b; ++b)
        for (std::int64_t h = 0; h < pr.hq; ++h)
          for (std::int64_t qb = 0; qb < l.qblocks; ++qb) {
            const std::int64_t i0 = qb * o.block_q, i1 = std::min(pr.sq, i0 + o.block_q);
            const std::int64_t candidates = std::max<std::int64_t>(0, i1 - o.window);  // causal, sq == skv
            ASSERT_EQ(list_of(l, b, h, qb), naive_search(c, b, h, i0, i1, candidates, o))
                << "b " << b << " h " << h << " query block " << qb << " top_k " << o.top_k << " Bk " << o.block_k;
          }
    }
}

TEST(Hip, ListsAreAscendingInRangeAndAsLongAsTheBudget) {
  seeded_rng seeded;
  const problem pr{1, 8, 2, 300, 1000, 32, 32};
  case_f32 c(pr, seeded.rng);
  const attention_params params = causal_params();
  hip_options o = options(96, 32, 16, 4, 64);
  o.head_group = 4;
  auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
  a.params = params;
  const owned_layout l = hip_layout(a, o);
  EXPECT_EQ(l.groups, 2);
  for (std::int64_t g = 0; g < l.groups; ++g)
    for (std::int64_t qb = 0; qb < l.qblocks; ++qb) {
      const std::vector<std::int64_t> ids = list_of(l, 0, g, qb);
      const std::int64_t last_row = std::min(pr.sq, (qb + 1) * o.block_q) - 1;
      const std::int64_t candidates = pr.skv - pr.sq + last_row + 1 - o.window;
      const std::int64_t blocks = (candidates + o.block_k - 1) / o.block_k;
      EXPECT_EQ(static_cast<std::int64_t>(ids.size()), std::min<std::int64_t>(blocks, 6));
      for (std::size_t x = 0; x < ids.size(); ++x) {
        EXPECT_TRUE(ids[x] >= 0 && ids[x] < blocks) << ids[x];
        if (x > 0) {
          EXPECT_LT(ids[x - 1], ids[x]);
        }
      }
    }
  // The same lists with one thread (ties go to the lower start, no race decides anything).
  const owned_layout serial = hip_layout(a, o, cpu_native{executor::serial(), {}});
  EXPECT_EQ(serial.indptr, l.indptr);
  EXPECT_EQ(serial.indices, l.indices);
}

TEST(Hip, ABudgetOverEveryCandidateIsDenseCausalAttention) {
  seeded_rng seeded;
  for (const problem& pr : {problem{2, 4, 2, 100, 333, 64, 64}, problem{1, 4, 1, 1, 700, 32, 32}}) {
    case_f32 c(pr, seeded.rng);
    const attention_params params = causal_params();
    const hip_options o = options(pr.skv, 16, 8, 0, 20);
    auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
    a.params = params;
    a.lse = c.lse.view();
    const owned_layout l = hip_layout(a, o);
    a.sparse = l.view();
    flash_attention(a);
    c.expect_matches(c.oracle(params), 1e-5, false);
  }
}

/// Keys k_j = alpha(j) q + noise with alpha peaking at `peak` (every query row is q).
void plant_bump(case_f32& c, std::int64_t peak, double width, std::mt19937_64& rng) {
  std::normal_distribution<float> noise(0.0f, 0.05f);
  for (std::int64_t h = 0; h < c.pr.hq; ++h)
    for (std::int64_t i = 0; i < c.pr.sq; ++i)
      for (std::int64_t x = 0; x < c.pr.d; ++x) c.q.view(0, h, i, x) = c.q.view(0, 0, 0, x);
  for (std::int64_t j = 0; j < c.pr.skv; ++j) {
    const double alpha = std::exp(-std::pow((j - peak) / width, 2.0));
    for (std::int64_t x = 0; x < c.pr.d; ++x)
      c.k.view(0, 0, j, x) = static_cast<float>(alpha) * c.q.view(0, 0, 0, x) + noise(rng);
  }
}

TEST(Hip, APlantedPeaksBlockIsSelected) {
  seeded_rng seeded;
  const problem pr{1, 1, 1, 4, 4096, 32, 32};
  std::uniform_int_distribution<std::int64_t> where(0, 3000);
  int found = 0, trials = 0;
  for (int t = 0; t < 20; ++t) {
    case_f32 c(pr, seeded.rng);
    const std::int64_t peak = where(seeded.rng);
    plant_bump(c, peak, 200.0, seeded.rng);
    const hip_options o = options(128, 4, 16, 0, 64);
    const attention_params params = causal_params();
    auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
    a.params = params;
    const std::vector<std::int64_t> ids = list_of(hip_layout(a, o), 0, 0, 0);
    const bool hit = std::find(ids.begin(), ids.end(), peak / o.block_k) != ids.end();
    EXPECT_TRUE(hit) << "peak " << peak;
    found += hit;
    ++trials;
  }
  std::printf("HiP planted-peak recall: %d / %d\n", found, trials);
}

TEST(Hip, PagedKeysGiveTheListsOfStridedOnes) {
  seeded_rng seeded;
  const problem pr{2, 4, 2, 50, 400, 32, 32};
  case_f32 c(pr, seeded.rng);
  const attention_params params = causal_params();
  const hip_options o = options(64, 16, 8, 256, 16);
  auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
  a.params = params;
  const owned_layout strided = hip_layout(a, o);
  const paged_copy<float> kp(c.k.cview(), {pr.skv, pr.skv}, 16, seeded.rng), vp(c.v.cview(), {pr.skv, pr.skv}, 16, seeded.rng);
  auto p = make_attention_args(c.q.cview(), kp.view, vp.view, c.o.view);
  p.params = params;
  const owned_layout paged = hip_layout(p, o);
  EXPECT_EQ(paged.indices, strided.indices);
  EXPECT_EQ(paged.indptr, strided.indptr);
}

}  // namespace
}  // namespace attnkit::test
