// The attention variant resolved for one sequence: which keys a query sees
// (attention_mask), how a scaled q.k becomes a score (score_modifier), and the
// learned sink logit of the softmax denominator (sink_normalizer). Every
// backend calls these hooks; none re-implements a mask or a modifier. All are
// trivially copyable so CUDA kernels take them by value.
//
// Positions are explicit: query row i sits at q_pos + i, key j at k_pos + j
// (sequence_span, schedule.hpp). So a call over any subset of the keys, given
// their positions, computes exactly its share of the full result.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "attnkit/attention/params.hpp"
#include "attnkit/attention/sparse/layout.hpp"
#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// How a tile of (query rows) x (keys) relates to the mask; kernels skip empty tiles
/// and drop per-element tests on full ones.
enum class tile_state { empty, partial, full };

/// The math a score hook needs, for each value type a backend computes in:
/// float and double here, xsimd batches in the cpu backend (flash_cpu/plan.hpp).
template <class V>
struct value_math {
  // Unqualified: CUDA's device overloads of tanh and fabs for float sit beside ::tanhf.
  ATTNKIT_HOST_DEVICE static V tanh(V x) {
    using std::tanh;
    return tanh(x);
  }
  ATTNKIT_HOST_DEVICE static V abs(V x) {
    using std::fabs;
    return fabs(x);
  }
};

/// One sequence's queries and keys: sq rows at positions q_pos + i, skv keys at k_pos + j.
struct sequence_span {
  std::int64_t sq = 0, skv = 0;
  std::int64_t q_pos = 0, k_pos = 0;

  /// Default positions: keys from 0, queries bottom-right aligned (the last query
  /// row sits at the last key), so a decode step is the last position.
  static sequence_span bottom_right(std::int64_t sq, std::int64_t skv) { return {sq, skv, skv - sq, 0}; }
};

struct attention_mask {
  static constexpr std::int64_t far = std::int64_t{1} << 62;  // windows at least this wide are unbounded

  sequence_span span;
  std::int64_t left = far;   // visible when q - k <= left (positions) ...
  std::int64_t right = far;  // ... and k - q <= right
  std::int64_t sinks = 0;    // keys at positions below this ignore `left`
  // The caller's bitmask (custom_mask): bit j % 8 of byte bits[i * bits_row + j / 8] says
  // whether row i sees key j; null: every key the band allows.
  const std::uint8_t* bits = nullptr;
  std::int64_t bits_row = 0;
  // A block-sparse layout (sparse/layout.hpp): a key must also be listed for
  // the row's query block, or be one of the layout's sinks or window keys.
  sparse_blocks sparse;

  ATTNKIT_HOST_DEVICE std::int64_t position(std::int64_t i) const { return span.q_pos + i; }
  ATTNKIT_HOST_DEVICE std::int64_t key_position(std::int64_t j) const { return span.k_pos + j; }

  ATTNKIT_HOST_DEVICE bool bit(std::int64_t i, std::int64_t j) const {
    return !bits || ((bits[i * bits_row + (j >> 3)] >> (j & 7)) & 1) != 0;
  }

  ATTNKIT_HOST_DEVICE bool visible(std::int64_t i, std::int64_t j) const {
    const std::int64_t p = position(i), kp = key_position(j);
    return kp - p <= right && (p - kp <= left || kp < sinks) && bit(i, j) && selected(i, j);
  }

  /// Whether the layout lets row i see key j (true without a layout).
  ATTNKIT_HOST_DEVICE bool selected(std::int64_t i, std::int64_t j) const {
    if (!sparse.given()) return true;
    const std::int64_t p = position(i), kp = key_position(j);
    return (kp <= p && (kp < sparse.sinks || p - kp < sparse.window)) || sparse.listed(i, j);
  }

  /// Keys [first, last] of row i that the band (windows, causal) allows, plus the
  /// keys below sink_end, which ignore the left edge; indices, not positions.
  struct row_keys {
    std::int64_t first, last, sink_end;
  };
  ATTNKIT_HOST_DEVICE row_keys band(std::int64_t i) const {
    const std::int64_t p = position(i), n = span.skv;  // |p|, window widths < 2^62: no overflow
    row_keys r;
    r.last = right >= far ? n - 1 : clamp(p + right - span.k_pos, -1, n - 1);
    r.first = left >= far ? 0 : clamp(p - left - span.k_pos, 0, n);
    r.sink_end = clamp(sinks - span.k_pos, 0, r.last + 1);
    return r;
  }

  /// Classifies rows [i0, i1) x keys [j0, j1). `full` and `empty` are exact claims;
  /// `partial` means some elements may be masked.
  ATTNKIT_HOST_DEVICE tile_state classify(std::int64_t i0, std::int64_t i1, std::int64_t j0,
                                          std::int64_t j1) const {
    const tile_state band_state = classify_band(i0, i1, j0, j1);
    if (band_state == tile_state::empty) return band_state;
    const tile_state sparse_state = classify_sparse(i0, i1, j0, j1);
    if (sparse_state == tile_state::empty) return sparse_state;
    const tile_state both = sparse_state == tile_state::full ? band_state : tile_state::partial;
    if (!bits) return both;
    bool any = false, all = true;
    for (std::int64_t i = i0; i < i1; ++i)
      for (std::int64_t j = j0; j < j1;) {
        const std::int64_t byte = j >> 3, lo = j & 7, hi = (j1 - 8 * byte < 8) ? j1 - 8 * byte : 8;
        const unsigned want = ((1u << hi) - 1u) & ~((1u << lo) - 1u);
        const unsigned got = bits[i * bits_row + byte] & want;
        any = any || got != 0;
        all = all && got == want;
        j = 8 * byte + 8;
      }
    if (!any) return tile_state::empty;
    return all && both == tile_state::full ? tile_state::full : tile_state::partial;
  }

  /// The first key >= j that the layout may let some row of [i0, i1) see
  /// (span.skv when none; j without a layout): where a scan of keys resumes.
  ATTNKIT_HOST_DEVICE std::int64_t next_selected(std::int64_t i0, std::int64_t i1, std::int64_t j) const {
    if (!sparse.given() || i0 >= i1) return j;
    const std::int64_t last = position(i1 - 1) - span.k_pos;  // the layout's band ends at the last row
    if (j < sparse.sinks - span.k_pos && j <= last) return j;
    std::int64_t next = span.skv;
    if (sparse.window > 0 && j <= last) {
      const std::int64_t w0 = position(i0) - span.k_pos - sparse.window + 1;
      next = w0 > j ? w0 : j;
    }
    for (std::int64_t qb = i0 / sparse.block_q; qb * sparse.block_q < i1; ++qb) {
      const std::int64_t at = sparse.lower_bound(qb, j / sparse.block_k);
      if (at < sparse.list_end(qb)) {
        const std::int64_t k0 = sparse.id(at) * sparse.block_k;
        const std::int64_t from = k0 > j ? k0 : j;
        next = from < next ? from : next;
      }
    }
    return next;
  }

  /// classify without the bitmask and the layout.
  ATTNKIT_HOST_DEVICE tile_state classify_band(std::int64_t i0, std::int64_t i1, std::int64_t j0,
                                               std::int64_t j1) const {
    return classify_band(left, right, sinks, i0, i1, j0, j1);
  }

  /// classify by the layout alone: its sinks and window are a band (right edge
  /// 0, left edge window - 1); its lists are exact per query block.
  ATTNKIT_HOST_DEVICE tile_state classify_sparse(std::int64_t i0, std::int64_t i1, std::int64_t j0,
                                                 std::int64_t j1) const {
    if (!sparse.given()) return i0 < i1 && j0 < j1 ? tile_state::full : tile_state::empty;
    const tile_state band_state = classify_band(sparse.window - 1, 0, sparse.sinks, i0, i1, j0, j1);
    if (band_state == tile_state::full) return band_state;
    const std::int64_t kb0 = j0 / sparse.block_k, kb1 = (j1 - 1) / sparse.block_k;
    bool any = false, all = true;
    for (std::int64_t qb = i0 / sparse.block_q; qb * sparse.block_q < i1; ++qb) {
      const std::int64_t n = sparse.count(qb, kb0, kb1);
      any = any || n > 0;
      all = all && n == kb1 - kb0 + 1;
    }
    if (all) return tile_state::full;
    return any || band_state == tile_state::partial ? tile_state::partial : tile_state::empty;
  }

 private:
  /// rows [i0, i1) x keys [j0, j1) against a band: visible when k - p <= r and (p - k <= l or k < s).
  ATTNKIT_HOST_DEVICE tile_state classify_band(std::int64_t l, std::int64_t r, std::int64_t s, std::int64_t i0,
                                               std::int64_t i1, std::int64_t j0, std::int64_t j1) const {
    if (i0 >= i1 || j0 >= j1) return tile_state::empty;
    const std::int64_t p_first = position(i0), p_last = position(i1 - 1);
    const std::int64_t k_first = key_position(j0), k_last = key_position(j1 - 1);
    // k - p over the tile spans [k_first - p_last, k_last - p_first]; the band is [-l, r].
    if (k_first - p_last > r) return tile_state::empty;
    if (p_first - k_last > l && k_first >= s) return tile_state::empty;
    const bool right_ok = k_last - p_first <= r;
    const bool left_ok = k_last < s || p_last - (k_first > s ? k_first : s) <= l;
    return right_ok && left_ok ? tile_state::full : tile_state::partial;
  }

  ATTNKIT_HOST_DEVICE static std::int64_t clamp(std::int64_t x, std::int64_t lo, std::int64_t hi) {
    return x < lo ? lo : (x > hi ? hi : x);
  }
};

struct score_modifier {
  float scale = 1.0f;
  float softcap = 0.0f;                 // 0: off
  const float* alibi_slopes = nullptr;  // (hq), stride alibi_stride; null: off
  std::int64_t alibi_stride = 1;

  ATTNKIT_HOST_DEVICE float slope(std::int64_t h) const { return alibi_slopes ? alibi_slopes[h * alibi_stride] : 0.0f; }

  /// The score of a scaled dot product s, for a key `dist` positions after the
  /// query (negative: before it), in any value type V with a value_math.
  template <class V>
  ATTNKIT_HOST_DEVICE V modify(V s, float slope_h, V dist) const {
    if (softcap > 0.0f) s = V(softcap) * value_math<V>::tanh(s / V(softcap));
    if (alibi_slopes) s = s - V(slope_h) * value_math<V>::abs(dist);
    return s;
  }

  /// Score of raw dot product qk (float or double) for query head h at position
  /// qpos and key position kpos.
  template <class Acc>
  ATTNKIT_HOST_DEVICE Acc operator()(Acc qk, std::int64_t h, std::int64_t qpos, std::int64_t kpos) const {
    return modify(qk * static_cast<Acc>(scale), slope(h), static_cast<Acc>(kpos - qpos));
  }
};

struct sink_normalizer {
  const float* sink_logits = nullptr;  // (hq), stride sink_stride; null: off
  std::int64_t sink_stride = 1;

  /// The extra denominator logit of head h; -inf when there is none.
  ATTNKIT_HOST_DEVICE float sink(std::int64_t h) const {
    return sink_logits ? sink_logits[h * sink_stride] : -INFINITY;
  }
};

struct attention_variant {
  attention_mask mask;
  score_modifier score;
  sink_normalizer normalizer;
};

/// Resolves params for one sequence of head dim d (bits: see attention_mask).
/// Expects params and positions already validated (detail::check_params, check_batch).
inline attention_variant make_variant(const attention_params& params, const sequence_span& span, std::int64_t d,
                                      const std::uint8_t* bits = nullptr, std::int64_t bits_row = 0) {
  attention_variant v;
  const auto capped = [](std::int64_t w) { return w < attention_mask::far ? w : attention_mask::far; };
  v.mask.span = span;
  v.mask.left = capped(params.window_left);
  v.mask.right = params.causal && params.window_right > 0 ? 0 : capped(params.window_right);
  v.mask.sinks = params.sinks;
  v.mask.bits = bits;
  v.mask.bits_row = bits_row;
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

/// make_variant with default positions: sq rows bottom-right aligned over skv keys.
inline attention_variant make_variant(const attention_params& params, std::int64_t sq, std::int64_t skv,
                                      std::int64_t d) {
  return make_variant(params, sequence_span::bottom_right(sq, skv), d);
}

ATTNKIT_END_NAMESPACE
