// The online-softmax state and the exact merge of two partial results.
//
// A partial attention result over a subset of keys is a pair (o, lse): o is
// normalized over that subset, lse = log sum exp(scores). Two partials over
// disjoint key sets combine into the result over their union:
//   lse = log(exp(lse_a) + exp(lse_b)),  o = exp(lse_a - lse) o_a + exp(lse_b - lse) o_b.
// An empty subset has lse = -inf and contributes nothing.
#pragma once

#include <cmath>
#include <limits>

#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// Running max m and running sum l = sum exp(s - m) over the scores seen so far.
struct softmax_state {
  float m = -std::numeric_limits<float>::infinity();
  float l = 0.0f;

  /// Moves the reference max to cover a block whose max is block_max. Returns the
  /// factor exp(m_old - m_new) that earlier sums and accumulators must be scaled by.
  ATTNKIT_HOST_DEVICE float rescale(float block_max) {
    if (!(block_max > m)) return 1.0f;  // the max stays (the common case once a row warms up)
    const float alpha = m == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(m - block_max);
    m = block_max;
    l *= alpha;
    return alpha;
  }

  /// log sum exp of every score seen; -inf when none was finite.
  ATTNKIT_HOST_DEVICE float lse() const {
    return l > 0.0f ? m + std::log(l) : -std::numeric_limits<float>::infinity();
  }
};

/// Weights of two partial results in their merge, and the merged lse.
struct merge_weights {
  float a;
  float b;
  float lse;
};

ATTNKIT_HOST_DEVICE inline merge_weights merge_lse(float lse_a, float lse_b) {
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  const float m = lse_a > lse_b ? lse_a : lse_b;
  if (m == neg_inf) return {0.0f, 0.0f, neg_inf};
  const float ea = std::exp(lse_a - m);
  const float eb = std::exp(lse_b - m);
  const float sum = ea + eb;
  return {ea / sum, eb / sum, m + std::log(sum)};
}

ATTNKIT_END_NAMESPACE
