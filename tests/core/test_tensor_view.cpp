// tensor_view addressing (BHSD, BSHD, slices) and the owning tensor.
#include <cstdint>
#include <numeric>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/core/tensor.hpp"
#include "attnkit/core/tensor_view.hpp"

namespace attnkit {
namespace {

TEST(TensorView, BhsdAndBshdAddressTheSameLogicalElement) {
  const std::int64_t B = 2, H = 3, S = 5, D = 7;
  std::vector<int> bhsd(B * H * S * D), bshd(B * S * H * D);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t s = 0; s < S; ++s)
        for (std::int64_t d = 0; d < D; ++d) {
          const int tag = static_cast<int>(((b * 10 + h) * 10 + s) * 10 + d);
          bhsd[((b * H + h) * S + s) * D + d] = tag;
          bshd[((b * S + s) * H + h) * D + d] = tag;
        }
  const auto x = make_bhsd(bhsd.data(), B, H, S, D);
  const auto y = make_bshd(bshd.data(), B, S, H, D);
  EXPECT_EQ(y.extent(1), H);
  EXPECT_EQ(y.extent(2), S);
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t s = 0; s < S; ++s)
        for (std::int64_t d = 0; d < D; ++d) ASSERT_EQ(x(b, h, s, d), y(b, h, s, d));
}

TEST(TensorView, SliceHeadGivesTheSequenceByDimView) {
  std::vector<float> data(2 * 3 * 4 * 5);
  std::iota(data.begin(), data.end(), 0.0f);
  const auto v = make_bshd(data.data(), 2, 4, 3, 5);  // (b, h, s, d) = (2, 3, 4, 5)
  const auto head = slice_head(v, 1, 2);              // (s, d)
  EXPECT_EQ(head.extent(0), 4);
  EXPECT_EQ(head.extent(1), 5);
  for (std::int64_t s = 0; s < 4; ++s)
    for (std::int64_t d = 0; d < 5; ++d) EXPECT_EQ(head(s, d), v(1, 2, s, d));

  tensor<float, 3> lse({2, 3, 4});
  std::iota(lse.data(), lse.data() + lse.size(), 0.0f);
  const auto row = slice_head(lse.view(), 1, 2);  // (s)
  for (std::int64_t s = 0; s < 4; ++s) EXPECT_EQ(row(s), lse(1, 2, s));
}

TEST(TensorView, SliceRestrictsOneDimension) {
  std::vector<int> data(6 * 4);
  std::iota(data.begin(), data.end(), 0);
  tensor_view<int, 2> v(data.data(), {6, 4});
  const auto rows = v.slice(0, 2, 5);  // (3, 4)
  EXPECT_EQ(rows.extent(0), 3);
  EXPECT_EQ(rows(0, 0), 8);
  EXPECT_EQ(rows(2, 3), 19);
  const auto cols = v.slice(1, 1, 3);  // (6, 2)
  EXPECT_EQ(cols(5, 1), 22);
  EXPECT_EQ(v.slice(0, 3, 3).size(), 0);
}

TEST(TensorView, DefaultIsEmptyAndConstConversionKeepsLayout) {
  tensor_view<float, 3> none;
  EXPECT_EQ(none.data_handle(), nullptr);
  EXPECT_TRUE(none.empty());
  std::vector<float> data(24);
  tensor_view<float, 3> v(data.data(), {2, 3, 4});
  tensor_view<const float, 3> c = v;
  EXPECT_EQ(c.data_handle(), data.data());
  EXPECT_EQ(c.stride(0), 12);
  EXPECT_EQ(c.stride(2), 1);
  EXPECT_EQ(c.size(), 24);
}

TEST(Tensor, IsAlignedAndRowMajor) {
  tensor<float, 3> t({3, 5, 7}, 1.5f);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(t.data()) % tensor_alignment, 0u);
  EXPECT_EQ(t.size(), 105);
  EXPECT_EQ(&t(1, 2, 3), t.data() + (1 * 5 + 2) * 7 + 3);
  EXPECT_EQ(t(2, 4, 6), 1.5f);
  tensor<float, 3> moved = std::move(t);
  EXPECT_EQ(moved.extent(1), 5);
  EXPECT_THROW((tensor<float, 2>({3, -1})), error);
}

}  // namespace
}  // namespace attnkit
