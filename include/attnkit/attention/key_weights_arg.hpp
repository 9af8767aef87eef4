// key_weights: the request for how much attention each key received (the
// signal of score-based KV eviction), and its checks. The passes that compute
// it are in key_weights.hpp and flash_cpu/key_weights.hpp.
#pragma once

#include <cmath>
#include <cstdint>

#include "attnkit/attention/validate.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/view_checks.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct key_weights {
  tensor_view<float, 3> out;                // (b, hq or hkv, skv); overwritten, 0 past a sequence's length
  tensor_view<const float, 1> row_weights;  // (sq), or (total) packed rows when ragged; finite; empty: all 1
};

namespace detail {

inline bool is_given(const key_weights& kw) { return is_given(kw.out); }

/// Checks a requested key_weights against the call's shape (skv: the longest
/// sequence; rows: what row_weights covers, sq or the packed rows).
inline void check_key_weights(const char* fn, const key_weights& kw, const attention_shape& s, std::int64_t rows) {
  if (!is_given(kw)) return;
  check_view(fn, "key_weights.out", kw.out, true);
  check_extent(fn, "key_weights.out", kw.out, 0, "b", s.b, "the number of sequences");
  ATTNKIT_CHECK(kw.out.extent(1) == s.hq || kw.out.extent(1) == s.hkv, fn,
                ": key_weights.out.extent(1) must equal hq = ", s.hq, " (per query head) or hkv = ", s.hkv,
                " (summed over each GQA group), got ", kw.out.extent(1));
  check_extent(fn, "key_weights.out", kw.out, 2, "skv", s.skv, "the key count");
  if (!is_given(kw.row_weights)) return;
  check_view(fn, "key_weights.row_weights", kw.row_weights, false);
  check_extent(fn, "key_weights.row_weights", kw.row_weights, 0, "rows", rows, "q.extent(2)");
  for (std::int64_t i = 0; i < rows; ++i)
    ATTNKIT_CHECK(std::isfinite(kw.row_weights(i)), fn, ": key_weights.row_weights(", i, ") must be finite, got ",
                  kw.row_weights(i));
}

/// The weight of row i of row_weights (attention_batch::weight_row says which row a sequence's row is).
inline float row_weight(const key_weights& kw, std::int64_t i) {
  return is_given(kw.row_weights) ? kw.row_weights(i) : 1.0f;
}

/// The out row that query head h adds to.
inline std::int64_t key_weights_row(const key_weights& kw, std::int64_t h, std::int64_t hq, std::int64_t group) {
  return kw.out.extent(1) == hq ? h : h / group;
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
