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
#include "attnkit/core/view_checks.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// The dimensions of one attention problem, read off validated views.
struct attention_shape {
  std::int64_t b, hq, hkv, sq, skv, d, dv;
};

namespace detail {

/// hq a multiple of hkv >= 1 (GQA; hq may be 0). `hkv_name` says where hkv came from.
inline void check_heads(const char* fn, std::int64_t hq, std::int64_t hkv, const char* hkv_name) {
  ATTNKIT_CHECK(hkv >= 1, fn, ": ", hkv_name, " (hkv) must be >= 1, got ", hkv);
  ATTNKIT_CHECK(hq % hkv == 0, fn, ": q.extent(1) (hq) = ", hq, " must be a multiple of ", hkv_name, " (hkv) = ", hkv);
}

/// A head has d >= 1 key and dv >= 1 value dims: scores over d = 0 would be 0 * 1/sqrt(0).
inline void check_head_dims(const char* fn, std::int64_t d, std::int64_t dv) {
  ATTNKIT_CHECK(d >= 1, fn, ": q.extent(3) (d) must be >= 1, got ", d);
  ATTNKIT_CHECK(dv >= 1, fn, ": v's last extent (dv) must be >= 1, got ", dv);
}

/// Checks q (b, hq, sq, d), k (b, hkv, skv, d), v (b, hkv, skv, dv); returns the shape.
template <class TQ, class TK, class TV>
attention_shape check_qkv(const char* fn, const tensor_view<TQ, 4>& q, const tensor_view<TK, 4>& k,
                          const tensor_view<TV, 4>& v) {
  check_view(fn, "q", q, true);
  check_view(fn, "k", k, true);
  check_view(fn, "v", v, true);
  const attention_shape s{q.extent(0), q.extent(1), k.extent(1), q.extent(2), k.extent(2), q.extent(3),
                          v.extent(3)};
  check_extent(fn, "k", k, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "v", v, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "v", v, 1, "hkv", s.hkv, "k.extent(1)");
  check_heads(fn, s.hq, s.hkv, "k.extent(1)");
  check_extent(fn, "v", v, 2, "skv", s.skv, "k.extent(2)");
  check_extent(fn, "k", k, 3, "d", s.d, "q.extent(3)");
  check_head_dims(fn, s.d, s.dv);
  return s;
}

/// Checks o (b, hq, sq, dv) against the shape; `dv_source` names where dv came from.
template <class TO>
void check_output(const char* fn, const tensor_view<TO, 4>& o, const attention_shape& s, const char* dv_source) {
  check_view(fn, "o", o, true);
  check_extent(fn, "o", o, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "o", o, 1, "hq", s.hq, "q.extent(1)");
  check_extent(fn, "o", o, 2, "sq", s.sq, "q.extent(2)");
  check_extent(fn, "o", o, 3, "dv", s.dv, dv_source);
}

/// Checks the optional LSE output (b, hq, sq).
inline void check_lse(const char* fn, const tensor_view<float, 3>& lse, const attention_shape& s) {
  if (!is_given(lse)) return;
  check_view(fn, "lse", lse, false);
  check_extent(fn, "lse", lse, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "lse", lse, 1, "hq", s.hq, "q.extent(1)");
  check_extent(fn, "lse", lse, 2, "sq", s.sq, "q.extent(2)");
}

/// A per-head parameter: hq finite values (content check, O(hq)).
inline void check_per_head(const char* fn, const char* name, const tensor_view<const float, 1>& v,
                           std::int64_t hq) {
  if (!is_given(v)) return;
  check_view(fn, name, v, false);
  check_extent(fn, name, v, 0, "hq", hq, "q.extent(1)");
  for (std::int64_t h = 0; h < hq; ++h)
    ATTNKIT_CHECK(std::isfinite(v(h)), fn, ": ", name, "(", h, ") must be finite, got ", v(h));
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
  const attention_shape s = check_qkv(fn, q, k, v);
  check_output(fn, o, s, "v.extent(3)");
  check_lse(fn, lse, s);
  check_params(fn, params, s);
  return s;
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
