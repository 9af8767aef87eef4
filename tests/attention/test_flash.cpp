// flash_attention (reference backend) against the fp64 oracle: awkward sizes
// around its tile edges, every mask and modifier, head dims, GQA, layouts, dtypes.
#include <tuple>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "support/attention_case.hpp"
#include "support/expect_error.hpp"

namespace attnkit::test {
namespace {

template <class TQ, class TK, class TV, class TO>
void check_flash(const problem& pr, mask_case m) {
  check_against_oracle<TQ, TK, TV, TO>(
      pr, m,
      [](auto& c, const attention_params& params) {
        flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), reference{});
      },
      false);
}

class FlashReferenceSizes : public ::testing::TestWithParam<size_mask_param> {};

TEST_P(FlashReferenceSizes, MatchesFp64Reference) {
  const auto [sq, skv, m] = GetParam();
  problem pr;
  pr.b = 2, pr.hq = 4, pr.hkv = 1, pr.sq = sq, pr.skv = skv, pr.d = 64, pr.dv = 64, pr.lay = layout::bshd;
  check_flash<float, float, float, float>(pr, m);
}

INSTANTIATE_TEST_SUITE_P(Flash, FlashReferenceSizes, size_mask_sweep(), size_mask_name);

TEST(FlashReference, LongSequences) {
  problem pr;
  pr.hq = 2, pr.hkv = 1, pr.sq = 1000, pr.skv = 1000, pr.d = 32, pr.dv = 32;
  for (mask_case m : {mask_case::causal, mask_case::sinks_window, mask_case::everything})
    check_flash<float, float, float, float>(pr, m);
}

TEST(FlashReference, HeadDimsGqaAndLayouts) {
  for (std::int64_t d : {1, 33, 64, 80, 96, 128, 256})
    for (std::int64_t group : {1, 4, 8})
      for (layout lay : {layout::bhsd, layout::bshd}) {
        SCOPED_TRACE("d " + std::to_string(d) + " group " + std::to_string(group) + " " + layout_name(lay));
        problem pr;
        pr.hkv = 2, pr.hq = 2 * group, pr.sq = 31, pr.skv = 127, pr.d = pr.dv = d, pr.lay = lay;
        check_flash<float, float, float, float>(pr, mask_case::everything);
      }
}

TEST(FlashReference, ReducedPrecisionTypes) {
  problem pr;
  pr.hq = 8, pr.hkv = 2, pr.sq = 127, pr.skv = 300, pr.d = pr.dv = 128;
  for_each_mix(reduced_precision_mixes{}, [&](auto mix) {
    using M = decltype(mix);
    check_flash<typename M::q, typename M::k, typename M::v, typename M::o>(pr, M::mask);
  });
}

TEST(FlashReference, RejectsBadInputLikeDense) {
  tensor<float, 4> q({1, 4, 3, 8}, 0.0f), k({1, 3, 5, 8}, 0.0f), o({1, 4, 3, 8}, -1.0f);
  expect_error([&] { flash_attention(q.cview(), k.cview(), k.cview(), o.view()); },
               "attnkit: flash_attention: q.extent(1) (hq) = 4 must be a multiple of k.extent(1) (hkv) = 3");
  for (std::int64_t i = 0; i < o.size(); ++i) ASSERT_EQ(o.data()[i], -1.0f);
}

}  // namespace
}  // namespace attnkit::test
