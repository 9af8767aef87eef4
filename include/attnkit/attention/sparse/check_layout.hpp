// The checks of a block_sparse_layout (layout.hpp) against the call it rides
// on, before any write: its sizes and views (O(1)), and its lists (O(b *
// head groups * query blocks + nnz), a content check like cu_seqlens_q's):
// offsets that never decrease and stay inside indices, ids in range, ascending
// and unique. The kernels then trust every list.
#pragma once

#include <algorithm>
#include <cstdint>

#include "attnkit/attention/schedule.hpp"
#include "attnkit/attention/sparse/layout.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/view_checks.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// The layout's sizes and views for hq query heads in GQA groups of `group`.
inline void check_layout_shape(const char* fn, const block_sparse_layout& l, const attention_batch& batch,
                               std::int64_t hq, std::int64_t group) {
  constexpr std::int64_t limit = std::int64_t{1} << 61;  // as positions: no sum of two overflows
  ATTNKIT_CHECK(l.block_q >= 0 && l.block_q < limit, fn, ": sparse.block_q must be in [0, 2^61) (0: no layout), got ",
                l.block_q);
  if (!l.given()) {
    ATTNKIT_CHECK(!is_given(l.indptr) && !is_given(l.indices), fn,
                  ": sparse.indptr or sparse.indices is given but sparse.block_q is 0 (no layout)");
    return;
  }
  ATTNKIT_CHECK(l.block_k >= 1 && l.block_k < limit, fn, ": sparse.block_k must be in [1, 2^61), got ", l.block_k);
  ATTNKIT_CHECK(l.head_group >= 1 && group % l.head_group == 0, fn,
                ": sparse.head_group must divide the GQA group hq / hkv = ", group, ", got ", l.head_group);
  ATTNKIT_CHECK(l.sinks >= 0 && l.sinks < limit, fn, ": sparse.sinks must be in [0, 2^61), got ", l.sinks);
  ATTNKIT_CHECK(l.window >= 0 && l.window < limit, fn, ": sparse.window must be in [0, 2^61), got ", l.window);
  check_view(fn, "sparse.indptr", l.indptr, false);
  check_view(fn, "sparse.indices", l.indices, false);
  check_extent(fn, "sparse.indptr", l.indptr, 0, "b", batch.count, "the number of sequences");
  check_extent(fn, "sparse.indptr", l.indptr, 1, "hq / head_group", hq / l.head_group, "the head groups");
  std::int64_t most = 0;
  for (std::int64_t b = 0; b < batch.count; ++b) most = std::max(most, batch.rows(b));
  const std::int64_t blocks = (most + l.block_q - 1) / l.block_q;
  ATTNKIT_CHECK(l.indptr.extent(2) >= blocks + 1, fn,
                ": sparse.indptr.extent(2) must hold n_qblk + 1 = ", blocks + 1, " offsets (the tallest sequence's ",
                most, " rows in blocks of ", l.block_q, "), got ", l.indptr.extent(2));
}

/// Every list of the layout: sequence b has length(b) keys.
template <class Lengths>
void check_layout(const char* fn, const block_sparse_layout& l, const attention_batch& batch, std::int64_t hq,
                  std::int64_t group, const Lengths& length) {
  check_layout_shape(fn, l, batch, hq, group);
  if (!l.given()) return;
  const std::int64_t nnz = l.indices.extent(0);
  for (std::int64_t b = 0; b < batch.count; ++b) {
    const std::int64_t qblocks = (batch.rows(b) + l.block_q - 1) / l.block_q;
    const std::int64_t kblocks = (length(b) + l.block_k - 1) / l.block_k;
    for (std::int64_t g = 0; g < l.indptr.extent(1); ++g)
      for (std::int64_t qb = 0; qb < qblocks; ++qb) {
        const std::int64_t first = l.indptr(b, g, qb), end = l.indptr(b, g, qb + 1);
        ATTNKIT_CHECK(0 <= first && first <= end && end <= nnz, fn, ": sparse.indptr(", b, ", ", g, ", ", qb,
                      " .. ", qb + 1, ") = ", first, " .. ", end, " must be a non-decreasing range inside [0, nnz = ",
                      nnz, "]");
        for (std::int64_t at = first; at < end; ++at) {
          const std::int64_t id = l.indices(at);
          ATTNKIT_CHECK(0 <= id && id < kblocks, fn, ": sparse.indices(", at, ") = ", id, " (sequence ", b,
                        ", head group ", g, ", query block ", qb, ") must be a key block in [0, ", kblocks, ")");
          ATTNKIT_CHECK(at == first || l.indices(at - 1) < id, fn, ": sparse.indices(", at - 1, " .. ", at, ") = ",
                        l.indices(at - 1), ", ", id, " (sequence ", b, ", head group ", g, ", query block ", qb,
                        ") must be ascending and unique");
        }
      }
  }
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
