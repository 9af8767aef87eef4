// The attention variant resolved for one problem: which keys a query sees
// (attention_mask), how a raw q.k becomes a score (score_modifier), and the
// learned sink logit of the softmax denominator (sink_normalizer).
// All are trivially copyable so CUDA kernels take them by value.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "attnkit/attention/params.hpp"
#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// How a tile of (query rows) x (keys) relates to the mask; kernels skip empty tiles
/// and drop per-element tests on full ones.
enum class tile_state { empty, partial, full };

struct attention_mask {
  std::int64_t sq = 0;
  std::int64_t skv = 0;
  std::int64_t left = attention_params::unbounded;   // visible when pos - j <= left ...
  std::int64_t right = attention_params::unbounded;  // ... and j - pos <= right
  std::int64_t sinks = 0;                            // keys below this ignore `left`

  /// Position of query row i (bottom-right aligned).
  ATTNKIT_HOST_DEVICE std::int64_t position(std::int64_t i) const { return skv - sq + i; }

  ATTNKIT_HOST_DEVICE bool visible(std::int64_t i, std::int64_t j) const {
    const std::int64_t p = position(i);
    return j - p <= right && (p - j <= left || j < sinks);
  }

  /// Classifies rows [i0, i1) x keys [j0, j1). `full` and `empty` are exact claims;
  /// `partial` means some elements may be masked.
  ATTNKIT_HOST_DEVICE tile_state classify(std::int64_t i0, std::int64_t i1, std::int64_t j0,
                                          std::int64_t j1) const {
    if (i0 >= i1 || j0 >= j1) return tile_state::empty;
    const std::int64_t p_first = position(i0);
    const std::int64_t p_last = position(i1 - 1);
    // j - p over the tile spans [j0 - p_last, j1 - 1 - p_first]; the band is [-left, right].
    if (j0 - p_last > right) return tile_state::empty;
    if (p_first - (j1 - 1) > left && j0 >= sinks) return tile_state::empty;
    const bool right_ok = j1 - 1 - p_first <= right;
    const bool left_ok = j1 <= sinks || p_last - (j0 > sinks ? j0 : sinks) <= left;
    return right_ok && left_ok ? tile_state::full : tile_state::partial;
  }
};

struct score_modifier {
  float scale = 1.0f;
  float softcap = 0.0f;                 // 0: off
  const float* alibi_slopes = nullptr;  // (hq), stride alibi_stride; null: off
  std::int64_t alibi_stride = 1;

  /// Score of raw dot product qk for query head h at position qpos and key j.
  template <class Acc>
  ATTNKIT_HOST_DEVICE Acc operator()(Acc qk, std::int64_t h, std::int64_t qpos, std::int64_t j) const {
    Acc s = qk * static_cast<Acc>(scale);
    if (softcap > 0.0f) s = static_cast<Acc>(softcap) * std::tanh(s / static_cast<Acc>(softcap));
    if (alibi_slopes) s += static_cast<Acc>(alibi_slopes[h * alibi_stride]) * static_cast<Acc>(j - qpos);
    return s;
  }
};

struct sink_normalizer {
  const float* sink_logits = nullptr;  // (hq), stride sink_stride; null: off
  std::int64_t sink_stride = 1;

  /// The extra denominator logit of head h; -inf when there is none.
  ATTNKIT_HOST_DEVICE float sink(std::int64_t h) const {
    return sink_logits ? sink_logits[h * sink_stride] : -std::numeric_limits<float>::infinity();
  }
};

struct attention_variant {
  attention_mask mask;
  score_modifier score;
  sink_normalizer normalizer;
};

/// Resolves params for a problem of sq queries, skv keys and head dim d.
/// Expects params already validated (detail::check_params).
inline attention_variant make_variant(const attention_params& params, std::int64_t sq, std::int64_t skv,
                                      std::int64_t d) {
  attention_variant v;
  v.mask.sq = sq;
  v.mask.skv = skv;
  v.mask.left = params.window_left;
  v.mask.right = params.causal && params.window_right > 0 ? 0 : params.window_right;
  v.mask.sinks = params.sinks;
  v.score.scale = params.scale ? *params.scale : 1.0f / std::sqrt(static_cast<float>(d));
  v.score.softcap = params.softcap;
  if (!params.alibi_slopes.empty()) {
    v.score.alibi_slopes = params.alibi_slopes.data_handle();
    v.score.alibi_stride = params.alibi_slopes.stride(0);
  }
  if (!params.sink_logits.empty()) {
    v.normalizer.sink_logits = params.sink_logits.data_handle();
    v.normalizer.sink_stride = params.sink_logits.stride(0);
  }
  return v;
}

ATTNKIT_END_NAMESPACE
