// merge_states: combine two partial attention results over disjoint key sets
// into the result over their union (split-KV decode, cascade / shared-prefix
// attention, key shards across ranks). The arithmetic is merge_lse in
// core/softmax_state.hpp. lse is the natural log, as flash_attention returns
// it; an lse in base 2 (FlashInfer's) must be multiplied by ln 2 first.
#pragma once

#include <cstdint>
#include <type_traits>

#include "attnkit/attention/validate.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/softmax_state.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// o = merge of (o_a, lse_a) and (o_b, lse_b); lse, when given, gets the merged lse.
/// o may alias o_a or o_b (and lse may alias lse_a or lse_b): each element is read before it is written.
template <class TA, class TB, class TO>
void merge_states(tensor_view<TA, 4> o_a,             // (b, h, s, dv)
                  tensor_view<const float, 3> lse_a,  // (b, h, s)
                  tensor_view<TB, 4> o_b,             // (b, h, s, dv)
                  tensor_view<const float, 3> lse_b,  // (b, h, s)
                  tensor_view<TO, 4> o,               // (b, h, s, dv)
                  tensor_view<float, 3> lse = {}) {   // (b, h, s)
  static_assert(is_element_type_v<std::remove_const_t<TA>> && is_element_type_v<std::remove_const_t<TB>> &&
                    is_element_type_v<TO>,
                "o_a, o_b, o must hold float, half or bfloat16 (o non-const)");
  constexpr const char* fn = "merge_states";
  detail::check_view(fn, "o_a", o_a, true);
  detail::check_view(fn, "o_b", o_b, true);
  detail::check_view(fn, "o", o, true);
  detail::check_view(fn, "lse_a", lse_a, false);
  detail::check_view(fn, "lse_b", lse_b, false);
  const char* names[] = {"b", "h", "s", "dv"};
  for (std::size_t r = 0; r < 4; ++r) {
    detail::check_extent(fn, "o_b", o_b, r, names[r], o_a.extent(r), "o_a's");
    detail::check_extent(fn, "o", o, r, names[r], o_a.extent(r), "o_a's");
  }
  for (std::size_t r = 0; r < 3; ++r) {
    detail::check_extent(fn, "lse_a", lse_a, r, names[r], o_a.extent(r), "o_a's");
    detail::check_extent(fn, "lse_b", lse_b, r, names[r], o_a.extent(r), "o_a's");
  }
  const bool want_lse = detail::is_given(lse);
  if (want_lse) {
    detail::check_view(fn, "lse", lse, false);
    for (std::size_t r = 0; r < 3; ++r) detail::check_extent(fn, "lse", lse, r, names[r], o_a.extent(r), "o_a's");
  }

  for (std::int64_t b = 0; b < o_a.extent(0); ++b)
    for (std::int64_t h = 0; h < o_a.extent(1); ++h)
      for (std::int64_t i = 0; i < o_a.extent(2); ++i) {
        const merge_weights w = merge_lse(lse_a(b, h, i), lse_b(b, h, i));
        for (std::int64_t c = 0; c < o_a.extent(3); ++c) {
          // A side with weight 0 (an empty key set) contributes nothing, whatever its o holds.
          const float a = w.a == 0.0f ? 0.0f : w.a * to_float(o_a(b, h, i, c));
          const float bb = w.b == 0.0f ? 0.0f : w.b * to_float(o_b(b, h, i, c));
          o(b, h, i, c) = from_float<TO>(a + bb);
        }
        if (want_lse) lse(b, h, i) = w.lse;
      }
}

ATTNKIT_END_NAMESPACE
