// Checks of a caller's tensor_view that every public entry point shares (both
// wings use them): optional views, extents, strides, null data, and sizes that
// stay below 2^63 so no later product overflows.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// An optional view counts as given unless it is the empty default (null, all extents 0).
template <class T, std::size_t R>
bool is_given(const tensor_view<T, R>& v) {
  if (v.data_handle() != nullptr) return true;
  for (std::size_t r = 0; r < R; ++r)
    if (v.extent(r) != 0) return true;
  return false;
}

/// Non-negative extents whose elements and addresses stay below 2^63 (so no later
/// product overflows), non-null data when non-empty, and optionally unit stride
/// on the last dim.
template <class T, std::size_t R>
void check_view(const char* fn, const char* name, const tensor_view<T, R>& v, bool unit_last_stride) {
  for (std::size_t r = 0; r < R; ++r)
    ATTNKIT_CHECK(v.extent(r) >= 0, fn, ": ", name, ".extent(", r, ") must be >= 0, got ", v.extent(r));
  if (v.empty()) return;
  std::int64_t elements = 1, reach = 0;  // reach: the largest |offset| of an element
  for (std::size_t r = 0; r < R; ++r) {
    const std::int64_t e = v.extent(r), step = v.stride(r) < 0 ? -v.stride(r) : v.stride(r);
    const bool fits = elements <= INT64_MAX / e && v.stride(r) != INT64_MIN &&
                      (step == 0 || e - 1 <= (INT64_MAX - reach) / step);
    ATTNKIT_CHECK(fits, fn, ": ", name, " addresses more than 2^63 elements (extent(", r, ") = ", e,
                  ", stride(", r, ") = ", v.stride(r), ")");
    elements *= e;
    reach += (e - 1) * step;
  }
  ATTNKIT_CHECK(v.data_handle() != nullptr, fn, ": ", name, " has ", elements, " elements but a null data pointer");
  ATTNKIT_CHECK(!unit_last_stride || v.extent(R - 1) <= 1 || v.stride(R - 1) == 1, fn, ": ", name,
                ".stride(", R - 1, ") (the innermost dim) must be 1, got ", v.stride(R - 1));
}

template <class T, std::size_t R>
void check_extent(const char* fn, const char* name, const tensor_view<T, R>& v, std::size_t r,
                  const char* dim, std::int64_t expected, const char* source) {
  ATTNKIT_CHECK(v.extent(r) == expected, fn, ": ", name, ".extent(", r, ") (", dim, ") must equal ", source,
                " = ", expected, ", got ", v.extent(r));
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
