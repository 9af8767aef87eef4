// With ATTNKIT_NO_EXCEPTIONS a failed check prints its message and aborts.
// (Its own executable: the macro changes an inline function.)
#include <gtest/gtest.h>

#include "attnkit/attention/dense.hpp"
#include "attnkit/core/tensor.hpp"

namespace attnkit {
namespace {

TEST(NoExceptionsDeathTest, FailedCheckAbortsWithTheMessage) {
  tensor<float, 4> q({1, 2, 3, 8}, 0.0f), k({1, 2, 3, 4}, 0.0f), o({1, 2, 3, 8}, 0.0f);
  EXPECT_DEATH(dense_attention(q.cview(), k.cview(), q.cview(), o.view()),
               "attnkit: dense_attention: k.extent\\(3\\) \\(d\\) must equal q.extent\\(3\\) = 8, got 4");
}

TEST(NoExceptionsDeathTest, ValidCallRuns) {
  tensor<float, 4> q({1, 2, 3, 8}, 0.0f), o({1, 2, 3, 8}, 1.0f);
  dense_attention(q.cview(), q.cview(), q.cview(), o.view());
  EXPECT_EQ(o(0, 1, 2, 7), 0.0f);
}

}  // namespace
}  // namespace attnkit
