// block_sparse_layout: which keys each block of query rows attends, as a
// block-sparse row (BSR) structure: per (sequence, head group, query block) a
// sorted list of key-block ids, plus token-exact sink keys and a local window
// every row attends. It is one more mask of attention_args (args.sparse): the
// flash body runs it like any other schedule, visiting (and reading) only the
// key tiles some selected block, sink or window key reaches, so every other
// option of the call (masks, dtypes, GQA, paged and ragged K/V, lse, key
// weights) works with it. HiP, Routing, Landmark and Quest are producers of
// this layout (sparse/*.hpp).
//
// Row i of sequence b (at position p = q_pos(b) + i) sees key j (at position
// kp = k_pos(b) + j) when the call's own masks allow it and
//   j / block_k is in the list of query block i / block_q, or
//   kp <= p and (kp < sinks or p - kp < window).
// Blocks are indices, not positions: block kb is keys [kb * block_k,
// (kb + 1) * block_k) of the sequence, cut at its length. Causality comes from
// positions (params.causal), never from block ids, so a layout may list a
// block that reaches past a row's position; its later keys stay masked.
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct block_sparse_layout {
  std::int64_t block_q = 0;     // query rows per query block (Bq); 0: no layout
  std::int64_t block_k = 0;     // keys per key block (Bk)
  std::int64_t head_group = 1;  // consecutive query heads sharing one list: 1 (per head) .. hq / hkv (a GQA group)
  // (b, hq / head_group, >= n_qblk + 1) with n_qblk = ceil(rows / block_q) of
  // the tallest sequence: query block qb of sequence b, head group g lists
  // indices[indptr(b, g, qb) .. indptr(b, g, qb + 1)).
  tensor_view<const std::int64_t, 3> indptr;
  tensor_view<const std::int64_t, 1> indices;  // (nnz) key-block ids, ascending and unique in each list
  std::int64_t sinks = 0;   // keys at positions below this are attended by every row at or after them
  std::int64_t window = 0;  // and the keys at positions (p - window, p]

  bool given() const { return block_q > 0; }
};

/// A layout that owns its lists: what the producers (hip.hpp, quest.hpp, ...)
/// return. view() points into it, so it must outlive the calls that use the view.
struct owned_layout {
  block_sparse_layout shape;           // block sizes, head_group, sinks, window; its views unused
  std::int64_t b = 0, groups = 0, qblocks = 0;  // indptr is (b, groups, qblocks + 1)
  std::vector<std::int64_t> indptr, indices;

  block_sparse_layout view() const {
    block_sparse_layout l = shape;
    l.indptr = tensor_view<const std::int64_t, 3>(indptr.data(), {b, groups, qblocks + 1});
    l.indices = tensor_view<const std::int64_t, 1>(indices.data(), {static_cast<std::int64_t>(indices.size())});
    return l;
  }
  /// The ids query block qb of sequence bi, head group g lists: [first, last) in indices.
  const std::int64_t* first(std::int64_t bi, std::int64_t g, std::int64_t qb) const {
    return indices.data() + indptr[static_cast<std::size_t>((bi * groups + g) * (qblocks + 1) + qb)];
  }
  const std::int64_t* last(std::int64_t bi, std::int64_t g, std::int64_t qb) const { return first(bi, g, qb + 1); }

  /// Fills indptr and indices from b * groups * qblocks lists: list x is
  /// counts[x] ids at lists + x * stride, in (sequence, group, query block) order.
  void set_lists(const std::int64_t* lists, std::int64_t stride, const std::int64_t* counts) {
    indptr.assign(static_cast<std::size_t>(b * groups * (qblocks + 1)), 0);
    indices.clear();
    for (std::int64_t x = 0; x < b * groups; ++x) {
      std::int64_t* ptr = indptr.data() + x * (qblocks + 1);
      ptr[0] = static_cast<std::int64_t>(indices.size());
      for (std::int64_t qb = 0; qb < qblocks; ++qb) {
        const std::int64_t item = x * qblocks + qb;
        indices.insert(indices.end(), lists + item * stride, lists + item * stride + counts[item]);
        ptr[qb + 1] = static_cast<std::int64_t>(indices.size());
      }
    }
  }
};

/// The layout resolved for one (sequence, head group): what a mask consults.
/// Trivially copyable, so device kernels take it by value.
struct sparse_blocks {
  const std::int64_t* indptr = nullptr;  // (n_qblk + 1), stride indptr_stride; null: no layout
  std::int64_t indptr_stride = 1;
  const std::int64_t* indices = nullptr;
  std::int64_t indices_stride = 1;
  std::int64_t block_q = 1, block_k = 1;
  std::int64_t sinks = 0, window = 0;

  ATTNKIT_HOST_DEVICE bool given() const { return indptr != nullptr; }

  /// Position of the first listed id >= kb in query block qb's list (an index into indices).
  ATTNKIT_HOST_DEVICE std::int64_t lower_bound(std::int64_t qb, std::int64_t kb) const {
    std::int64_t lo = indptr[qb * indptr_stride], hi = indptr[(qb + 1) * indptr_stride];
    while (lo < hi) {
      const std::int64_t mid = lo + (hi - lo) / 2;
      if (id(mid) < kb)
        lo = mid + 1;
      else
        hi = mid;
    }
    return lo;
  }
  ATTNKIT_HOST_DEVICE std::int64_t list_end(std::int64_t qb) const { return indptr[(qb + 1) * indptr_stride]; }
  ATTNKIT_HOST_DEVICE std::int64_t id(std::int64_t at) const { return indices[at * indices_stride]; }

  /// How many of the key blocks [kb0, kb1] query block qb lists.
  ATTNKIT_HOST_DEVICE std::int64_t count(std::int64_t qb, std::int64_t kb0, std::int64_t kb1) const {
    return lower_bound(qb, kb1 + 1) - lower_bound(qb, kb0);
  }

  /// Whether row i's query block lists key j's block.
  ATTNKIT_HOST_DEVICE bool listed(std::int64_t i, std::int64_t j) const {
    const std::int64_t qb = i / block_q, kb = j / block_k, at = lower_bound(qb, kb);
    return at < list_end(qb) && id(at) == kb;
  }
};

ATTNKIT_END_NAMESPACE
