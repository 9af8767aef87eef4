// Paged KV: keys and values live in fixed-size pages of a shared pool, and a
// block table in CSR form says which pages hold each sequence, in order (as in
// vLLM and FlashInfer). Sequence b has
//   pages   indices[indptr[b]], ..., indices[indptr[b+1] - 1]
//   length  (pages - 1) * page_size + last_page_len[b]   (0 when it has no pages)
// and token j of it sits in page indices[indptr[b] + j / page_size] at slot
// j % page_size. It lives in core because both wings use it: the attention
// kernels read it, and the KV cache (kv/cache.hpp) hands it out.
#pragma once

#include <cstdint>

#include "attnkit/core/config.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct block_table {
  tensor_view<const std::int32_t, 1> indptr;         // (b + 1), indptr[0] = 0, non-decreasing
  tensor_view<const std::int32_t, 1> indices;        // (>= indptr[b]): page ids
  tensor_view<const std::int32_t, 1> last_page_len;  // (b): 1..page_size, or 0 for an empty sequence

  std::int64_t batch() const { return indptr.extent(0) - 1; }
};

/// A paged K or V: the page pool and the table that maps sequences onto it.
template <class T>
struct paged_kv {
  using element = T;
  tensor_view<T, 4> pages;  // (num_pages, hkv, page_size, d); any strides with d innermost
  block_table table;

  std::int64_t heads() const { return pages.extent(1); }
  std::int64_t page_size() const { return pages.extent(2); }
  std::int64_t dim() const { return pages.extent(3); }

  /// Tokens in sequence b.
  std::int64_t length(std::int64_t b) const {
    const std::int64_t n = table.indptr(b + 1) - table.indptr(b);
    return n == 0 ? 0 : (n - 1) * page_size() + table.last_page_len(b);
  }

  /// Token j of sequence b, head h: d contiguous elements.
  T* row(std::int64_t b, std::int64_t h, std::int64_t j) const {
    const std::int64_t ps = page_size();
    const std::int64_t page = table.indices(table.indptr(b) + j / ps);
    return pages.data_handle() + page * pages.stride(0) + h * pages.stride(1) + (j % ps) * pages.stride(2);
  }
};

ATTNKIT_END_NAMESPACE
