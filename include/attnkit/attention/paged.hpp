// Checks of the paged KV view (core/paged_view.hpp) for the attention kernels.
// The kernels read a paged sequence exactly as they read a contiguous one, so
// results are bit for bit the same.
#pragma once

#include <cstdint>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// Checks pool shape, page size (a power of two in 1..256), and that every table
/// entry stays inside its arrays and the pool.
template <class T>
void check_paged(const char* fn, const char* name, const paged_kv<T>& kv) {
  const tensor_view<T, 4>& p = kv.pages;
  for (std::size_t r = 0; r < 4; ++r)
    ATTNKIT_CHECK(p.extent(r) >= 0, fn, ": ", name, ".pages.extent(", r, ") must be >= 0, got ", p.extent(r));
  ATTNKIT_CHECK(p.empty() || p.data_handle() != nullptr, fn, ": ", name, ".pages has a null data pointer");
  ATTNKIT_CHECK(p.extent(3) <= 1 || p.stride(3) == 1, fn, ": ", name,
                ".pages.stride(3) (the innermost dim) must be 1, got ", p.stride(3));
  const std::int64_t ps = p.extent(2);
  ATTNKIT_CHECK(ps >= 1 && ps <= 256 && (ps & (ps - 1)) == 0, fn, ": ", name,
                ".pages.extent(2) (page_size) must be a power of two in [1, 256], got ", ps);
  const block_table& t = kv.table;
  ATTNKIT_CHECK(t.indptr.extent(0) >= 1 && t.indptr.data_handle() != nullptr, fn, ": ", name,
                ".table.indptr must hold b + 1 >= 1 entries, got ", t.indptr.extent(0));
  const std::int64_t b = t.batch();
  ATTNKIT_CHECK(t.last_page_len.extent(0) == b && (b == 0 || t.last_page_len.data_handle() != nullptr), fn,
                ": ", name, ".table.last_page_len.extent(0) must equal b = ", b, ", got ",
                t.last_page_len.extent(0));
  ATTNKIT_CHECK(t.indptr(0) == 0, fn, ": ", name, ".table.indptr(0) must be 0, got ", t.indptr(0));
  for (std::int64_t i = 0; i < b; ++i) {
    const std::int64_t n = t.indptr(i + 1) - t.indptr(i);
    ATTNKIT_CHECK(n >= 0 && t.indptr(i + 1) <= t.indices.extent(0), fn, ": ", name, ".table.indptr(", i + 1,
                  ") = ", t.indptr(i + 1), " must be in [indptr(", i, ") = ", t.indptr(i),
                  ", indices.extent(0) = ", t.indices.extent(0), "]");
    const std::int64_t last = t.last_page_len(i);
    ATTNKIT_CHECK(n == 0 ? last == 0 : last >= 1 && last <= ps, fn, ": ", name, ".table.last_page_len(", i,
                  ") must be ", n == 0 ? "0 (no pages)" : "in [1, page_size]", ", got ", last);
  }
  for (std::int64_t i = 0; i < t.indptr(b); ++i)
    ATTNKIT_CHECK(t.indices(i) >= 0 && t.indices(i) < p.extent(0), fn, ": ", name, ".table.indices(", i,
                  ") = ", t.indices(i), " is not a page of the pool [0, ", p.extent(0), ")");
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
