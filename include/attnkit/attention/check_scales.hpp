// The checks of a quantized K or V's scales (core/kv_scales.hpp): the views a
// type takes and no other, their shapes, and, as content checks (O(keys) per
// call), that every scale the call reads is finite and > 0. All before any
// output is written.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/kv_scales.hpp"
#include "attnkit/core/view_checks.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

// Names are literals (no std::string is built, so no standard-library inline
// is compiled into an arch's object and shared with another).
inline void check_scale_value(const char* fn, const char* field, float x, std::int64_t i, std::int64_t h,
                              std::int64_t j) {
  ATTNKIT_CHECK(std::isfinite(x) && x > 0.0f, fn, ": ", field, "(", i, ", ", h, ", ", j,
                ") must be finite and > 0 (a scale multiplies every value of its row), got ", x);
}

/// Whether n scales (stride apart) are all finite and > 0: one pass without branches.
template <class S>
bool scales_ok(const S* p, std::int64_t n, std::int64_t stride) {
  bool ok = true;
  for (std::int64_t j = 0; j < n; ++j) {
    const float x = to_float(p[j * stride]);
    ok &= x > 0.0f && x <= std::numeric_limits<float>::max();
  }
  return ok;
}

/// int8 row scales: one of rows or rows_f16, shaped (lead, hkv, slots) like the data without d.
template <class S>
void check_row_scales(const char* fn, const char* field, const tensor_view<const S, 3>& r,
                      std::int64_t lead, std::int64_t hkv, std::int64_t slots, const char* layout) {
  check_view(fn, field, r, false);  // field names k or v in full (check_kv_scales)
  const std::int64_t want[] = {lead, hkv, slots};
  for (std::size_t x = 0; x < 3; ++x)
    ATTNKIT_CHECK(r.extent(x) == want[x], fn, ": ", field, " must be ", layout, " = (", lead, ", ", hkv, ", ",
                  slots, "), but extent(", x, ") is ", r.extent(x));
}

/// The scales of k or v (name) over b sequences of hkv heads: the shape its
/// type asks for, and every scale a sequence's rows read finite and > 0.
template <class T>
void check_kv_scales(const char* fn, const char* name, const kv_input<T>& kv, std::int64_t b, std::int64_t hkv) {
  using U = std::remove_const_t<T>;
  const kv_scales& sc = kv.scales;
  if constexpr (!is_quantized_v<U>) {
    ATTNKIT_CHECK(sc.empty(), fn, ": ", name, ".scales are given but ", name, " holds ", dtype_name<U>(),
                  ", which takes none (only int8 and fp8 K/V are scaled)");
  } else if constexpr (std::is_same_v<U, std::int8_t>) {
    ATTNKIT_CHECK(!is_given(sc.heads), fn, ": ", name, ".scales.heads is for fp8; int8 ", name,
                  " takes a scale per row in rows or rows_f16");
    ATTNKIT_CHECK(is_given(sc.rows) != is_given(sc.rows_f16), fn, ": int8 ", name,
                  " needs its row scales in exactly one of ", name, ".scales.rows (fp32) and ", name,
                  ".scales.rows_f16, got ", is_given(sc.rows) ? "both" : "neither");
    const bool is_k = name[0] == 'k';
    const char* rn = is_given(sc.rows) ? (is_k ? "k.scales.rows" : "v.scales.rows")
                                       : (is_k ? "k.scales.rows_f16" : "v.scales.rows_f16");
    const std::int64_t lead = kv.is_paged ? kv.paged.pages.extent(0) : b;
    const std::int64_t slots = kv.is_paged ? kv.paged.page_size() : kv.strided.extent(2);
    const char* layout = kv.is_paged ? "(num_pages, hkv, page_size)" : "(b, hkv, skv)";
    if (is_given(sc.rows))
      check_row_scales(fn, rn, sc.rows, lead, hkv, slots, layout);
    else
      check_row_scales(fn, rn, sc.rows_f16, lead, hkv, slots, layout);
    // Content: the scale of every row a sequence holds, a run of rows at a time.
    for (std::int64_t s = 0; s < b; ++s)
      for (std::int64_t h = 0; h < hkv; ++h) {
        const std::int64_t len = kv.is_paged ? kv.paged.length(s) : slots;
        for (std::int64_t j0 = 0; j0 < len; j0 += slots) {
          const std::int64_t i = kv.is_paged ? kv.paged.table.indices(kv.paged.table.indptr(s) + j0 / slots) : s;
          const std::int64_t n = std::min(slots, len - j0);
          if (is_given(sc.rows) ? scales_ok(&sc.rows(i, h, 0), n, sc.rows.stride(2))
                                : scales_ok(&sc.rows_f16(i, h, 0), n, sc.rows_f16.stride(2)))
            continue;
          for (std::int64_t j = 0; j < n; ++j) check_scale_value(fn, rn, sc.row(i, h, j), i, h, j);
        }
      }
  } else {
    ATTNKIT_CHECK(!is_given(sc.rows) && !is_given(sc.rows_f16), fn, ": ", name, ".scales.rows is for int8; ",
                  dtype_name<U>(), " ", name, " takes one scale per (sequence, KV head) in ", name, ".scales.heads");
    ATTNKIT_CHECK(is_given(sc.heads), fn, ": ", dtype_name<U>(), " ", name, " needs ", name,
                  ".scales.heads (b, hkv) = (", b, ", ", hkv, ")");
    check_view(fn, name[0] == 'k' ? "k.scales.heads" : "v.scales.heads", sc.heads, false);
    ATTNKIT_CHECK(sc.heads.extent(0) == b && sc.heads.extent(1) == hkv, fn, ": ", name,
                  ".scales.heads must be (b, hkv) = (", b, ", ", hkv, "), got (", sc.heads.extent(0), ", ",
                  sc.heads.extent(1), ")");
    for (std::int64_t s = 0; s < b; ++s)
      for (std::int64_t h = 0; h < hkv; ++h) {
        const float x = sc.heads(s, h);
        ATTNKIT_CHECK(std::isfinite(x) && x > 0.0f, fn, ": ", name, ".scales.heads(", s, ", ", h,
                      ") must be finite and > 0 (a scale multiplies every value of its head), got ", x);
      }
  }
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
