// attention_params: the runtime knobs every attention kernel takes.
//
// Positions: by default query row i of sq sits at position skv - sq + i
// (bottom-right alignment), so a decode step (sq = 1) is the last position and
// a prefill chunk appended to a cache lines up with the cache's tail; key j
// sits at j. attention_args (attention_args.hpp) can place both anywhere.
//
// The score of query i and key j, at positions p = pos(i) and k = pos(j), is
//   s = scale * q.k                                   (scale defaults to 1/sqrt(d))
//   s = softcap * tanh(s / softcap)                   (when softcap > 0)
//   s = s - alibi_slopes[h] * |k - p|                 (when alibi_slopes is given)
// (ALiBi as FlashAttention-2 defines it: for causal calls k <= p and this is
// the usual slope * (k - p); keys after the query, when visible, are penalized
// by their distance too.) Key j is visible to query i when
//   k - p <= window_right   (0 when causal)   and
//   p - k <= window_left    or   k < sinks     (sink tokens ignore the left edge)
// and the softmax over visible keys adds exp(sink_logits[h]) to its denominator
// when sink_logits is given (a learned "attend to nothing" logit). The lse a
// call returns is the natural log of that denominator.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>

#include "attnkit/core/config.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct attention_params {
  /// A window edge with no limit.
  static constexpr std::int64_t unbounded = std::numeric_limits<std::int64_t>::max();

  std::optional<float> scale;                  ///< multiplies q.k; unset: 1/sqrt(d). Finite, > 0.
  bool causal = false;                         ///< keys after the query's position are masked
  std::int64_t window_left = unbounded;        ///< keys at most this far before the query are visible (>= 0)
  std::int64_t window_right = unbounded;       ///< keys at most this far after the query are visible (>= 0)
  std::int64_t sinks = 0;                      ///< keys at positions below this ignore window_left (0..skv;
                                               ///< with explicit key positions, 0..2^61)
  float softcap = 0.0f;                        ///< > 0: tanh soft cap on scores; 0: off
  tensor_view<const float, 1> alibi_slopes;    ///< (hq) ALiBi slope per query head; empty: off
  tensor_view<const float, 1> sink_logits;     ///< (hq) learned sink logit per query head; empty: off
};

ATTNKIT_END_NAMESPACE
