// Argument checks shared by the attention entry points (DESIGN §8): each failure
// names the function, the argument, the expected and the actual value, and
// happens before any output is written.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "attnkit/attention/params.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// The dimensions of one attention problem, read off validated views.
struct attention_shape {
  std::int64_t b, hq, hkv, sq, skv, d, dv;
};

namespace detail {

/// An optional view counts as given unless it is the empty default (null, all extents 0).
template <class T, std::size_t R>
bool is_given(const tensor_view<T, R>& v) {
  if (v.data_handle() != nullptr) return true;
  for (std::size_t r = 0; r < R; ++r)
    if (v.extent(r) != 0) return true;
  return false;
}

/// Non-negative extents, non-null data when non-empty, and optionally unit stride on the last dim.
template <class T, std::size_t R>
void check_view(const char* fn, const char* name, const tensor_view<T, R>& v, bool unit_last_stride) {
  for (std::size_t r = 0; r < R; ++r)
    ATTNKIT_CHECK(v.extent(r) >= 0, fn, ": ", name, ".extent(", r, ") must be >= 0, got ", v.extent(r));
  ATTNKIT_CHECK(v.empty() || v.data_handle() != nullptr, fn, ": ", name, " has ", v.size(),
                " elements but a null data pointer");
  ATTNKIT_CHECK(!unit_last_stride || v.extent(R - 1) <= 1 || v.stride(R - 1) == 1, fn, ": ", name,
                ".stride(", R - 1, ") (the innermost dim) must be 1, got ", v.stride(R - 1));
}

template <class T, std::size_t R>
void check_extent(const char* fn, const char* name, const tensor_view<T, R>& v, std::size_t r,
                  const char* dim, std::int64_t expected, const char* source) {
  ATTNKIT_CHECK(v.extent(r) == expected, fn, ": ", name, ".extent(", r, ") (", dim, ") must equal ", source,
                " = ", expected, ", got ", v.extent(r));
}

/// Checks q (b, hq, sq, d), k (b, hkv, skv, d), v (b, hkv, skv, dv), o (b, hq, sq, dv).
template <class TQ, class TK, class TV, class TO>
attention_shape check_qkvo(const char* fn, const tensor_view<TQ, 4>& q, const tensor_view<TK, 4>& k,
                           const tensor_view<TV, 4>& v, const tensor_view<TO, 4>& o) {
  check_view(fn, "q", q, true);
  check_view(fn, "k", k, true);
  check_view(fn, "v", v, true);
  check_view(fn, "o", o, true);
  const attention_shape s{q.extent(0), q.extent(1), k.extent(1), q.extent(2), k.extent(2), q.extent(3),
                          v.extent(3)};
  check_extent(fn, "k", k, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "v", v, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "o", o, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "v", v, 1, "hkv", s.hkv, "k.extent(1)");
  check_extent(fn, "o", o, 1, "hq", s.hq, "q.extent(1)");
  ATTNKIT_CHECK(s.hkv > 0 || s.hq == 0, fn, ": k.extent(1) (hkv) must be > 0 when q has ", s.hq, " heads");
  ATTNKIT_CHECK(s.hkv == 0 || s.hq % s.hkv == 0, fn, ": q.extent(1) (hq) = ", s.hq,
                " must be a multiple of k.extent(1) (hkv) = ", s.hkv);
  check_extent(fn, "v", v, 2, "skv", s.skv, "k.extent(2)");
  check_extent(fn, "o", o, 2, "sq", s.sq, "q.extent(2)");
  check_extent(fn, "k", k, 3, "d", s.d, "q.extent(3)");
  check_extent(fn, "o", o, 3, "dv", s.dv, "v.extent(3)");
  return s;
}

/// Checks the optional LSE output (b, hq, sq).
inline void check_lse(const char* fn, const tensor_view<float, 3>& lse, const attention_shape& s) {
  if (!is_given(lse)) return;
  check_view(fn, "lse", lse, false);
  check_extent(fn, "lse", lse, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "lse", lse, 1, "hq", s.hq, "q.extent(1)");
  check_extent(fn, "lse", lse, 2, "sq", s.sq, "q.extent(2)");
}

inline void check_per_head(const char* fn, const char* name, const tensor_view<const float, 1>& v,
                           std::int64_t hq) {
  if (!is_given(v)) return;
  check_view(fn, name, v, false);
  check_extent(fn, name, v, 0, "hq", hq, "q.extent(1)");
}

inline void check_params(const char* fn, const attention_params& p, const attention_shape& s) {
  if (p.scale) {
    ATTNKIT_CHECK(std::isfinite(*p.scale) && *p.scale > 0.0f, fn, ": params.scale must be finite and > 0, got ",
                  *p.scale);
  }
  ATTNKIT_CHECK(p.window_left >= 0, fn, ": params.window_left must be >= 0, got ", p.window_left);
  ATTNKIT_CHECK(p.window_right >= 0, fn, ": params.window_right must be >= 0, got ", p.window_right);
  ATTNKIT_CHECK(p.sinks >= 0 && p.sinks <= s.skv, fn, ": params.sinks must be in [0, skv = ", s.skv, "], got ",
                p.sinks);
  ATTNKIT_CHECK(std::isfinite(p.softcap) && p.softcap >= 0.0f, fn,
                ": params.softcap must be finite and >= 0 (0: off), got ", p.softcap);
  check_per_head(fn, "params.alibi_slopes", p.alibi_slopes, s.hq);
  check_per_head(fn, "params.sink_logits", p.sink_logits, s.hq);
}

template <class TQ, class TK, class TV, class TO>
inline constexpr bool attention_types_ok =
    is_element_type_v<std::remove_const_t<TQ>> && is_element_type_v<std::remove_const_t<TK>> &&
    is_element_type_v<std::remove_const_t<TV>> && is_element_type_v<TO>;

/// Every check of an attention call over contiguous K/V; returns its shape.
template <class TQ, class TK, class TV, class TO>
attention_shape check_attention_call(const char* fn, const tensor_view<TQ, 4>& q, const tensor_view<TK, 4>& k,
                                     const tensor_view<TV, 4>& v, const tensor_view<TO, 4>& o,
                                     const attention_params& params, const tensor_view<float, 3>& lse) {
  static_assert(attention_types_ok<TQ, TK, TV, TO>, "q, k, v, o must hold float, half or bfloat16 (o non-const)");
  const attention_shape s = check_qkvo(fn, q, k, v, o);
  check_lse(fn, lse, s);
  check_params(fn, params, s);
  return s;
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
