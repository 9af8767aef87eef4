// Bad input to dense_attention: every mistake throws attnkit::error naming the
// argument, the expected and the actual value, and leaves O untouched.
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "attnkit/attention/dense.hpp"
#include "attnkit/core/tensor.hpp"

namespace attnkit {
namespace {

using ::testing::HasSubstr;

constexpr float poison = -12345.0f;

struct buffers {
  // q (1, 4, 3, 8), k and v (1, 2, 5, 8), o (1, 4, 3, 8), lse (1, 4, 3), probs (1, 4, 3, 5)
  tensor<float, 4> q{{1, 4, 3, 8}, 0.5f}, k{{1, 2, 5, 8}, 0.25f}, v{{1, 2, 5, 8}, 1.0f};
  tensor<float, 4> o{{1, 4, 3, 8}, poison};
  tensor<float, 3> lse{{1, 4, 3}, poison};
  tensor<float, 4> probs{{1, 4, 3, 5}, poison};
};

/// Runs call, expects attnkit::error whose message contains `message`, and checks
/// that no output element was written.
void expect_rejected(const std::function<void(buffers&)>& call, const std::string& message) {
  buffers buf;
  try {
    call(buf);
    ADD_FAILURE() << "no error thrown; expected: " << message;
  } catch (const error& e) {
    EXPECT_THAT(e.what(), HasSubstr(message));
  }
  for (std::int64_t i = 0; i < buf.o.size(); ++i) ASSERT_EQ(buf.o.data()[i], poison) << "o written at " << i;
  for (std::int64_t i = 0; i < buf.lse.size(); ++i) ASSERT_EQ(buf.lse.data()[i], poison) << "lse written";
  for (std::int64_t i = 0; i < buf.probs.size(); ++i) ASSERT_EQ(buf.probs.data()[i], poison) << "probs written";
}

/// dense_attention on the buffers with their default views, params changed by `edit`.
void run_with(buffers& b, const std::function<void(attention_params&)>& edit) {
  attention_params p;
  edit(p);
  dense_attention(b.q.cview(), b.k.cview(), b.v.cview(), b.o.view(), p, b.lse.view(), b.probs.view());
}

TEST(DenseErrors, ValidCallSucceeds) {
  buffers b;
  run_with(b, [](attention_params&) {});
  EXPECT_NEAR(b.o(0, 0, 0, 0), 1.0f, 1e-6);
}

TEST(DenseErrors, BatchMismatch) {
  expect_rejected(
      [](buffers& b) {
        tensor<float, 4> k({2, 2, 5, 8}, 0.0f);
        dense_attention(b.q.cview(), k.cview(), b.v.cview(), b.o.view());
      },
      "dense_attention: k.extent(0) (b) must equal q.extent(0) = 1, got 2");
}

TEST(DenseErrors, KeyValueLengthMismatch) {
  expect_rejected(
      [](buffers& b) {
        tensor<float, 4> v({1, 2, 6, 8}, 0.0f);
        dense_attention(b.q.cview(), b.k.cview(), v.cview(), b.o.view());
      },
      "v.extent(2) (skv) must equal k.extent(2) = 5, got 6");
}

TEST(DenseErrors, KeyValueHeadMismatch) {
  expect_rejected(
      [](buffers& b) {
        tensor<float, 4> v({1, 1, 5, 8}, 0.0f);
        dense_attention(b.q.cview(), b.k.cview(), v.cview(), b.o.view());
      },
      "v.extent(1) (hkv) must equal k.extent(1) = 2, got 1");
}

TEST(DenseErrors, OutputShapeMismatch) {
  expect_rejected(
      [](buffers& b) { dense_attention(b.q.cview(), b.k.cview(), b.v.cview(), b.o.view().slice(2, 0, 2)); },
      "o.extent(2) (sq) must equal q.extent(2) = 3, got 2");
  expect_rejected(
      [](buffers& b) { dense_attention(b.q.cview(), b.k.cview(), b.v.cview(), b.o.view().slice(3, 0, 4)); },
      "o.extent(3) (dv) must equal v.extent(3) = 8, got 4");
  expect_rejected(
      [](buffers& b) { dense_attention(b.q.cview(), b.k.cview(), b.v.cview(), b.o.view().slice(1, 0, 2)); },
      "o.extent(1) (hq) must equal q.extent(1) = 4, got 2");
}

TEST(DenseErrors, LseAndProbsShapeMismatch) {
  expect_rejected(
      [](buffers& b) {
        dense_attention(b.q.cview(), b.k.cview(), b.v.cview(), b.o.view(), {}, b.lse.view().slice(2, 0, 1));
      },
      "lse.extent(2) (sq) must equal q.extent(2) = 3, got 1");
  expect_rejected(
      [](buffers& b) {
        dense_attention(b.q.cview(), b.k.cview(), b.v.cview(), b.o.view(), {}, b.lse.view(),
                        b.probs.view().slice(3, 0, 4));
      },
      "probs.extent(3) (skv) must equal k.extent(2) = 5, got 4");
}

TEST(DenseErrors, QueryHeadsNotAMultipleOfKvHeads) {
  expect_rejected(
      [](buffers& b) {
        tensor<float, 4> k({1, 3, 5, 8}, 0.0f), v({1, 3, 5, 8}, 0.0f);
        dense_attention(b.q.cview(), k.cview(), v.cview(), b.o.view());
      },
      "q.extent(1) (hq) = 4 must be a multiple of k.extent(1) (hkv) = 3");
}

TEST(DenseErrors, HeadDimMismatch) {
  expect_rejected(
      [](buffers& b) { dense_attention(b.q.cview(), b.k.cview().slice(3, 0, 6), b.v.cview(), b.o.view()); },
      "k.extent(3) (d) must equal q.extent(3) = 8, got 6");
}

TEST(DenseErrors, NonUnitStrideOnHeadDim) {
  expect_rejected(
      [](buffers& b) {
        // Every other element of a (1, 4, 3, 16) buffer: extents right, stride(3) = 2.
        tensor<float, 1> wide({1 * 4 * 3 * 16}, 0.0f);
        tensor_view<const float, 4> q(wide.data(), {1, 4, 3, 8}, {4 * 3 * 16, 3 * 16, 16, 2});
        dense_attention(q, b.k.cview(), b.v.cview(), b.o.view());
      },
      "q.stride(3) (the innermost dim) must be 1, got 2");
}

TEST(DenseErrors, NullPointerWithElements) {
  expect_rejected(
      [](buffers& b) {
        tensor_view<const float, 4> k(nullptr, {1, 2, 5, 8});
        dense_attention(b.q.cview(), k, b.v.cview(), b.o.view());
      },
      "k has 80 elements but a null data pointer");
}

TEST(DenseErrors, NegativeExtent) {
  expect_rejected(
      [](buffers& b) {
        tensor_view<const float, 4> q(b.q.data(), {1, 4, -3, 8});
        dense_attention(q, b.k.cview(), b.v.cview(), b.o.view());
      },
      "q.extent(2) must be >= 0, got -3");
}

TEST(DenseErrors, NegativeWindow) {
  expect_rejected([](buffers& b) { run_with(b, [](attention_params& p) { p.window_left = -1; }); },
                  "params.window_left must be >= 0, got -1");
  expect_rejected([](buffers& b) { run_with(b, [](attention_params& p) { p.window_right = -4; }); },
                  "params.window_right must be >= 0, got -4");
}

TEST(DenseErrors, ScaleNotFiniteOrNotPositive) {
  for (float bad : {0.0f, -0.5f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()}) {
    expect_rejected([bad](buffers& b) { run_with(b, [bad](attention_params& p) { p.scale = bad; }); },
                    "params.scale must be finite and > 0, got ");
  }
}

TEST(DenseErrors, SinksOutsideKeyRange) {
  expect_rejected([](buffers& b) { run_with(b, [](attention_params& p) { p.sinks = 6; }); },
                  "params.sinks must be in [0, skv = 5], got 6");
  expect_rejected([](buffers& b) { run_with(b, [](attention_params& p) { p.sinks = -1; }); },
                  "params.sinks must be in [0, skv = 5], got -1");
}

TEST(DenseErrors, BadSoftcap) {
  expect_rejected([](buffers& b) { run_with(b, [](attention_params& p) { p.softcap = -1.0f; }); },
                  "params.softcap must be finite and >= 0 (0: off), got -1");
}

TEST(DenseErrors, PerHeadArraysOfTheWrongLength) {
  static const float three[3] = {0.1f, 0.2f, 0.3f};
  expect_rejected(
      [](buffers& b) {
        run_with(b, [](attention_params& p) { p.alibi_slopes = tensor_view<const float, 1>(three, {3}); });
      },
      "params.alibi_slopes.extent(0) (hq) must equal q.extent(1) = 4, got 3");
  expect_rejected(
      [](buffers& b) {
        run_with(b, [](attention_params& p) { p.sink_logits = tensor_view<const float, 1>(three, {3}); });
      },
      "params.sink_logits.extent(0) (hq) must equal q.extent(1) = 4, got 3");
}

TEST(DenseErrors, MessageNamesTheFunction) {
  buffers b;
  tensor<float, 4> k({1, 2, 5, 6}, 0.0f);
  try {
    dense_attention(b.q.cview(), k.cview(), b.v.cview(), b.o.view());
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {  // attnkit::error is a std::invalid_argument
    EXPECT_STREQ(e.what(), "attnkit: dense_attention: k.extent(3) (d) must equal q.extent(3) = 8, got 6");
  }
}

}  // namespace
}  // namespace attnkit
