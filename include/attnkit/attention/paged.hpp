// Checks of the paged KV view (core/paged_view.hpp) for the attention kernels.
// The kernels read a paged sequence exactly as they read a contiguous one, so
// results are bit for bit the same.
#pragma once

#include <cstdint>

#include "attnkit/attention/validate.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// The argument names of a paged K or V in messages: literals, so no string is
/// built (a std::string template compiled in an arch TU would be shared by all).
struct paged_names {
  const char *pages, *indptr, *indices, *last_page_len;
};

inline paged_names paged_arg_names(const char* name) {
  if (name[0] == 'v') return {"v.pages", "v.table.indptr", "v.table.indices", "v.table.last_page_len"};
  return {"k.pages", "k.table.indptr", "k.table.indices", "k.table.last_page_len"};
}

/// Checks pool shape, page size (a power of two in 1..256), and that every table
/// entry stays inside its arrays and the pool.
template <class T>
void check_paged(const char* fn, const char* name, const paged_kv<T>& kv) {  // name: "k" or "v"
  const tensor_view<T, 4>& p = kv.pages;
  const paged_names names = paged_arg_names(name);
  check_view(fn, names.pages, p, true);
  const std::int64_t ps = p.extent(2);
  ATTNKIT_CHECK(ps >= 1 && ps <= 256 && (ps & (ps - 1)) == 0, fn, ": ", name,
                ".pages.extent(2) (page_size) must be a power of two in [1, 256], got ", ps);
  const block_table& t = kv.table;
  check_view(fn, names.indptr, t.indptr, false);
  check_view(fn, names.indices, t.indices, false);
  check_view(fn, names.last_page_len, t.last_page_len, false);
  ATTNKIT_CHECK(t.indptr.extent(0) >= 1, fn, ": ", name, ".table.indptr must hold b + 1 >= 1 entries, got ",
                t.indptr.extent(0));
  const std::int64_t b = t.batch();
  ATTNKIT_CHECK(t.last_page_len.extent(0) == b, fn, ": ", name, ".table.last_page_len.extent(0) must equal b = ", b,
                ", got ", t.last_page_len.extent(0));
  ATTNKIT_CHECK(t.indptr(0) == 0, fn, ": ", name, ".table.indptr(0) must be 0, got ", t.indptr(0));
  for (std::int64_t i = 0; i < b; ++i) {
    const std::int64_t n = std::int64_t{t.indptr(i + 1)} - t.indptr(i);  // int32 entries: subtract in int64
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
