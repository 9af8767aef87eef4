// quest_layout and quest_bounds: every page's bound is >= the true max score of
// its keys; a budget over every page is dense attention; bounds kept on append
// equal bounds of the whole; the local page is always kept; planted
// high-score keys are found (recall printed).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/sparse/quest.hpp"
#include "support/attention_case.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

using case_f32 = attention_case<float, float, float, float>;

TEST(Quest, EveryPageBoundIsAtLeastItsBestScore) {
  seeded_rng seeded;
  const problem pr{2, 4, 2, 3, 333, 40, 40};
  case_f32 c(pr, seeded.rng);
  const quest_bounds bounds = quest_page_bounds(make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view), 16);
  std::int64_t pages_checked = 0;
  for (std::int64_t b = 0; b < pr.b; ++b)
    for (std::int64_t h = 0; h < pr.hq; ++h)
      for (std::int64_t i = 0; i < pr.sq; ++i)
        for (std::int64_t page = 0; page < bounds.pages(); ++page) {
          const std::int64_t hk = h / (pr.hq / pr.hkv);
          double bound = 0, best = -1e300;
          for (std::int64_t x = 0; x < pr.d; ++x) {
            const double q = c.q.view(b, h, i, x);
            bound += std::max(q * bounds.min(b, hk, page, x), q * bounds.max(b, hk, page, x));
          }
          for (std::int64_t j = page * 16; j < std::min(pr.skv, (page + 1) * 16); ++j) {
            double dot = 0;
            for (std::int64_t x = 0; x < pr.d; ++x) dot += double(c.q.view(b, h, i, x)) * double(c.k.view(b, hk, j, x));
            best = std::max(best, dot);
          }
          EXPECT_GE(bound, best) << "page " << page;
          ++pages_checked;
        }
  EXPECT_EQ(pages_checked, 2 * 4 * 3 * 21);
}

TEST(Quest, BoundsKeptOnAppendEqualTheBoundsOfTheWhole) {
  seeded_rng seeded;
  const problem pr{1, 2, 2, 1, 100, 16, 16};
  case_f32 c(pr, seeded.rng);
  const quest_bounds whole = quest_page_bounds(make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view), 8);
  quest_bounds grown(1, 2, 100, 16, 8);
  for (std::int64_t j = 0; j < pr.skv; ++j)
    for (std::int64_t h = 0; h < 2; ++h) grown.add(0, h, j, &c.k.view(0, h, j, 0));
  for (std::int64_t x = 0; x < whole.min.size(); ++x) {
    ASSERT_EQ(whole.min.data()[x], grown.min.data()[x]);
    ASSERT_EQ(whole.max.data()[x], grown.max.data()[x]);
  }
}

TEST(Quest, ABudgetOverEveryPageIsDenseAttention) {
  seeded_rng seeded;
  for (const problem& pr : {problem{2, 8, 2, 1, 1000, 64, 64}, problem{1, 4, 4, 5, 77, 32, 32}}) {
    case_f32 c(pr, seeded.rng);
    const attention_params params = causal_params();
    auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
    a.params = params;
    a.lse = c.lse.view();
    const quest_bounds bounds = quest_page_bounds(a, 16);
    quest_options o;
    o.budget = pr.skv + 16;
    const owned_layout l = quest_layout(a, bounds, o);
    a.sparse = l.view();
    flash_attention(a);
    c.expect_matches(c.oracle(params), 1e-5, false);
  }
}

TEST(Quest, PlantedKeysAreFoundAndTheLocalPageIsKept) {
  seeded_rng seeded;
  const problem pr{1, 8, 2, 1, 4096, 64, 64};
  case_f32 c(pr, seeded.rng);
  // Eight keys per KV head that score high for every query head of its group:
  // twice the sum of the group's queries.
  std::uniform_int_distribution<std::int64_t> where(0, pr.skv - 1);
  std::vector<std::vector<std::int64_t>> planted(static_cast<std::size_t>(pr.hkv));
  for (std::int64_t hk = 0; hk < pr.hkv; ++hk)
    for (int n = 0; n < 8; ++n) {
      const std::int64_t j = where(seeded.rng);
      planted[static_cast<std::size_t>(hk)].push_back(j);
      for (std::int64_t x = 0; x < pr.d; ++x) {
        double sum = 0;
        for (std::int64_t h = hk * 4; h < hk * 4 + 4; ++h) sum += c.q.view(0, h, 0, x);
        c.k.view(0, hk, j, x) = static_cast<float>(2 * sum);
      }
    }
  const attention_params params = causal_params();
  auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
  a.params = params;
  const quest_bounds bounds = quest_page_bounds(a, 16);
  quest_options o;
  o.budget = 256;  // 16 of 256 pages
  const owned_layout l = quest_layout(a, bounds, o);
  int found = 0, total = 0;
  for (std::int64_t h = 0; h < pr.hq; ++h) {
    const std::vector<std::int64_t> ids(l.first(0, h, 0), l.last(0, h, 0));
    EXPECT_EQ(ids.size(), 16u);
    EXPECT_EQ(ids.back(), pr.skv / 16 - 1) << "the local page";
    for (std::int64_t j : planted[static_cast<std::size_t>(h / 4)]) {
      found += std::find(ids.begin(), ids.end(), j / 16) != ids.end();
      ++total;
    }
  }
  std::printf("Quest planted-key recall: %d / %d\n", found, total);
  EXPECT_EQ(found, total);
}

}  // namespace
}  // namespace attnkit::test
