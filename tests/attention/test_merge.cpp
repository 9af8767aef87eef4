// merge_states: attention over keys [0, n) equals the merge of attention over
// [0, m) and [m, n), for random m (the empty halves included).
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/dense.hpp"
#include "attnkit/attention/merge.hpp"
#include "support/attention_case.hpp"

namespace attnkit::test {
namespace {

TEST(MergeStates, SplitKeySetsMergeToTheWhole) {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  for (std::int64_t skv : {1, 7, 127, 300}) {
    problem pr;
    pr.b = 2, pr.hq = 4, pr.hkv = 2, pr.sq = 7, pr.skv = skv, pr.d = 64, pr.dv = 48, pr.lay = layout::bshd;
    attention_case<float, half, half, float> c(pr, rng);
    attention_params params;
    params.softcap = 3.0f;
    std::vector<std::int64_t> splits = {0, skv, std::uniform_int_distribution<std::int64_t>(0, skv)(rng)};
    for (std::int64_t m : splits) {
      SCOPED_TRACE("skv " + std::to_string(skv) + " split at " + std::to_string(m));
      tensor<float, 4> o_a({pr.b, pr.hq, pr.sq, pr.dv}), o_b({pr.b, pr.hq, pr.sq, pr.dv});
      tensor<float, 3> lse_a({pr.b, pr.hq, pr.sq}), lse_b({pr.b, pr.hq, pr.sq});
      const auto k = c.k.cview(), v = c.v.cview();
      dense_attention(c.q.cview(), k.slice(2, 0, m), v.slice(2, 0, m), o_a.view(), params, lse_a.view());
      dense_attention(c.q.cview(), k.slice(2, m, skv), v.slice(2, m, skv), o_b.view(), params, lse_b.view());
      merge_states(o_a.cview(), lse_a.cview(), o_b.cview(), lse_b.cview(), c.o.view, c.lse.view());
      c.expect_matches(c.oracle(params), 1e-5, false);

      // In place: the merge may overwrite its first input.
      merge_states(o_a.cview(), lse_a.cview(), o_b.cview(), lse_b.cview(), o_a.view(), lse_a.view());
      for (std::int64_t b = 0; b < pr.b; ++b)
        for (std::int64_t h = 0; h < pr.hq; ++h)
          for (std::int64_t i = 0; i < pr.sq; ++i)
            for (std::int64_t x = 0; x < pr.dv; ++x) ASSERT_EQ(o_a(b, h, i, x), c.o.view(b, h, i, x));
    }
  }
}

TEST(MergeStates, TwoEmptyPartialsStayEmpty) {
  tensor<float, 4> o_a({1, 1, 2, 3}, 7.0f), o_b({1, 1, 2, 3}, -7.0f), o({1, 1, 2, 3}, 1.0f);
  tensor<float, 3> lse_a({1, 1, 2}, -INFINITY), lse_b({1, 1, 2}, -INFINITY), lse({1, 1, 2}, 0.0f);
  merge_states(o_a.cview(), lse_a.cview(), o_b.cview(), lse_b.cview(), o.view(), lse.view());
  for (std::int64_t i = 0; i < o.size(); ++i) EXPECT_EQ(o.data()[i], 0.0f);
  EXPECT_EQ(lse(0, 0, 0), -INFINITY);
}

TEST(MergeStates, RejectsMismatchedShapes) {
  tensor<float, 4> o_a({1, 2, 3, 4}), o_b({1, 2, 3, 5}), o({1, 2, 3, 4});
  tensor<float, 3> lse_a({1, 2, 3}), lse_b({1, 2, 3});
  EXPECT_THROW(merge_states(o_a.cview(), lse_a.cview(), o_b.cview(), lse_b.cview(), o.view()), error);
  try {
    merge_states(o_a.cview(), lse_a.cview(), o_b.cview(), lse_b.cview(), o.view());
  } catch (const error& e) {
    EXPECT_STREQ(e.what(), "attnkit: merge_states: o_b.extent(3) (dv) must equal o_a's = 4, got 5");
  }
}

}  // namespace
}  // namespace attnkit::test
