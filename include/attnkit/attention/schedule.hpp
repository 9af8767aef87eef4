// What a kernel call visits, as backend-neutral data: the sequences of a batch
// (uniform or ragged rows, positions, the caller's bitmask), the keys each
// query block can see, and the key tiles that cover them. A backend's tile
// body runs whatever this yields; a tile the mask leaves empty is never
// visited, so the cost of a call follows the keys its masks let through.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/variant.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/kv_scales.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// The dequantization scale of row j of head h of sequence b, whose int8 scale
/// sits at (i, h, slot) of the row layout: 1 for float types, the row's scale
/// for int8, the (sequence, head) scale for fp8.
template <class T>
float row_scale(const kv_scales& scales, std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t slot) {
  using U = std::remove_const_t<T>;
  if constexpr (!is_quantized_v<U>) {
    return 1.0f;
  } else if constexpr (std::is_same_v<U, std::int8_t>) {
    return scales.row(i, h, slot);
  } else {
    return scales.heads(b, h);
  }
}

/// K or V as (b, hkv, skv, d) strided memory, with paged_rows' interface.
template <class T>
struct strided_kv {
  using element = T;
  tensor_view<T, 4> t;
  kv_scales scales;  // quantized T only
  std::int64_t length(std::int64_t) const { return t.extent(2); }
  T* row(std::int64_t b, std::int64_t h, std::int64_t j) const {
    return t.data_handle() + b * t.stride(0) + h * t.stride(1) + j * t.stride(2);
  }
  /// Row j's values are to_float(row(b, h, j)[x]) * scale(b, h, j).
  float scale(std::int64_t b, std::int64_t h, std::int64_t j) const { return row_scale<T>(scales, b, h, b, j); }
  /// out[0, n) = the scales of rows [j0, j0 + n).
  void scale_run(std::int64_t b, std::int64_t h, std::int64_t j0, std::int64_t n, float* out) const {
    if constexpr (std::is_same_v<std::remove_const_t<T>, std::int8_t>) {
      if (scales.rows.data_handle()) {
        const float* p = &scales.rows(b, h, j0);
        for (std::int64_t i = 0; i < n; ++i) out[i] = p[i * scales.rows.stride(2)];
        return;
      }
    }
    for (std::int64_t i = 0; i < n; ++i) out[i] = scale(b, h, j0 + i);
  }
};

/// A paged K or V with its scales: what the kernels read.
template <class T>
struct paged_rows : paged_kv<T> {
  kv_scales scales;  // quantized T only
  float scale(std::int64_t b, std::int64_t h, std::int64_t j) const {
    if constexpr (!is_quantized_v<std::remove_const_t<T>>) {
      return 1.0f;
    } else {
      const std::int64_t ps = this->page_size();
      return row_scale<T>(scales, b, h, this->table.indices(this->table.indptr(b) + j / ps), j % ps);
    }
  }
  /// out[0, n) = the scales of rows [j0, j0 + n): one table lookup per page.
  void scale_run(std::int64_t b, std::int64_t h, std::int64_t j0, std::int64_t n, float* out) const {
    if constexpr (std::is_same_v<std::remove_const_t<T>, std::int8_t>) {
      if (scales.rows.data_handle()) {
        const std::int64_t ps = this->page_size();
        for (std::int64_t i = 0; i < n;) {
          const std::int64_t j = j0 + i, slot = j % ps, run = std::min(n - i, ps - slot);
          const float* p = &scales.rows(this->table.indices(this->table.indptr(b) + j / ps), h, slot);
          for (std::int64_t x = 0; x < run; ++x) out[i + x] = p[x * scales.rows.stride(2)];
          i += run;
        }
        return;
      }
    }
    for (std::int64_t i = 0; i < n; ++i) out[i] = scale(b, h, j0 + i);
  }
};

/// f(k, v) with K and V as row sources of one form (strided_kv or paged_rows).
template <class TK, class TV, class F>
decltype(auto) with_kv_rows(const kv_input<TK>& k, const kv_input<TV>& v, F&& f) {
  if (k.is_paged) return f(paged_rows<TK>{k.paged, k.scales}, paged_rows<TV>{v.paged, v.scales});
  return f(strided_kv<TK>{k.strided, k.scales}, strided_kv<TV>{v.strided, v.scales});
}

/// The sequences of a validated call: where each one's query rows live, their
/// positions and their bitmask rows. Ragged, q is `blocks` (q.extent(0)) copies
/// of the packed layout cu describes: sequence b is packed sequence b % inner
/// of block b / inner (one block per KV head when a cache batches its heads).
struct attention_batch {
  std::int64_t count = 0;  // sequences
  std::int64_t sq = 0;     // rows per sequence when not ragged
  std::int64_t inner = 0;  // ragged: sequences per block of q (cu's entries - 1)
  tensor_view<const std::int64_t, 1> cu, q_pos, k_pos;
  tensor_view<const std::uint8_t, 3> bits;
  block_sparse_layout sparse;

  bool ragged() const { return is_given(cu); }
  std::int64_t rows(std::int64_t b) const { return ragged() ? cu(b % inner + 1) - cu(b % inner) : sq; }
  /// Sequence b's row i is q(q_batch(b), h, row0(b) + i, :) (and so for o and lse).
  std::int64_t q_batch(std::int64_t b) const { return ragged() ? b / inner : b; }
  std::int64_t row0(std::int64_t b) const { return ragged() ? cu(b % inner) : 0; }
  /// The row of sequence b's row 0 among all rows of a block (b * sq, or packed): what bits and row weights index.
  std::int64_t packed_row0(std::int64_t b) const { return ragged() ? cu(b % inner) : b * sq; }
  /// The entry of key_weights.row_weights ((sq), or packed when ragged) that sequence b's row i takes.
  std::int64_t weight_row(std::int64_t b, std::int64_t i) const { return ragged() ? cu(b % inner) + i : i; }

  sequence_span span(std::int64_t b, std::int64_t skv) const {
    const std::int64_t n = rows(b);
    const std::int64_t kp = is_given(k_pos) ? k_pos(b) : 0;
    return {n, skv, is_given(q_pos) ? q_pos(b) : kp + skv - n, kp};
  }

  /// The variant of query head h of sequence b, which holds skv keys.
  attention_variant variant(const attention_params& params, std::int64_t b, std::int64_t skv, std::int64_t d,
                            std::int64_t h) const {
    attention_variant v = make_variant(params, span(b, skv), d);
    if (is_given(bits)) {
      v.mask.bits = bits.data_handle() + (bits.extent(0) > 1 ? h : 0) * bits.stride(0) + packed_row0(b) * bits.stride(1);
      v.mask.bits_row = bits.stride(1);
    }
    if (sparse.given()) v.mask.sparse = blocks_of(b, h);
    return v;
  }

  /// The layout's lists for query head h of sequence b.
  sparse_blocks blocks_of(std::int64_t b, std::int64_t h) const {
    sparse_blocks s;
    s.indptr = &sparse.indptr(b, h / sparse.head_group, 0);
    s.indptr_stride = sparse.indptr.stride(2);
    s.indices = sparse.indices.data_handle();
    s.indices_stride = sparse.indices.stride(0);
    s.block_q = sparse.block_q;
    s.block_k = sparse.block_k;
    s.sinks = sparse.sinks;
    s.window = sparse.window;
    return s;
  }

  /// Whether the query heads of a GQA group of `group` heads may see different keys.
  bool heads_differ(std::int64_t group) const {
    return bits.extent(0) > 1 || (sparse.given() && sparse.head_group < group);
  }
};

template <class TQ, class TK, class TV, class TO>
attention_batch batch_of(const attention_args<TQ, TK, TV, TO>& a) {
  attention_batch ab;
  ab.inner = is_given(a.cu_seqlens_q) ? a.cu_seqlens_q.extent(0) - 1 : 0;
  ab.count = is_given(a.cu_seqlens_q) ? a.q.extent(0) * ab.inner : a.q.extent(0);
  ab.sq = is_given(a.cu_seqlens_q) ? 0 : a.q.extent(2);
  ab.cu = a.cu_seqlens_q;
  ab.q_pos = a.q_pos;
  ab.k_pos = a.k_pos;
  ab.bits = a.mask.bits;
  ab.sparse = a.sparse;
  return ab;
}

/// The keys rows [i0, i1) of one mask can see, as at most two index ranges in
/// order: the sink keys before the band, and the band (the union of the rows'
/// windows; rows sit at increasing positions, so it is one range).
struct key_ranges {
  std::int64_t begin[2] = {0, 0}, end[2] = {0, 0};
  int n = 0;

  std::int64_t total() const { return (end[0] - begin[0]) + (n > 1 ? end[1] - begin[1] : 0); }
  /// The key at offset `at` of the concatenated ranges (at < total()).
  std::int64_t key(std::int64_t at) const {
    return at < end[0] - begin[0] ? begin[0] + at : begin[1] + at - (end[0] - begin[0]);
  }
};

inline key_ranges visible_keys(const attention_mask& m, std::int64_t i0, std::int64_t i1) {
  key_ranges r;
  if (i0 >= i1 || m.span.skv == 0) return r;
  const attention_mask::row_keys top = m.band(i0), bottom = m.band(i1 - 1);
  const std::int64_t first = top.first, last = bottom.last, sink_end = std::min(bottom.sink_end, first);
  if (sink_end > 0) r.begin[r.n] = 0, r.end[r.n++] = sink_end;
  if (first <= last) {
    if (r.n > 0 && r.end[0] == first)
      r.end[0] = last + 1;
    else
      r.begin[r.n] = first, r.end[r.n++] = last + 1;
  }
  return r;
}

/// Whether keys [j0, j1) meet the ranges.
inline bool tile_visited(const key_ranges& r, std::int64_t j0, std::int64_t j1) {
  for (int x = 0; x < r.n; ++x)
    if (r.begin[x] < j1 && j0 < r.end[x]) return true;
  return false;
}

/// f(j0, j1) for each tile [j0, j1) of `tile` keys (tiles start at multiples of
/// `tile`, the last one cut at skv) that meets the ranges, in key order.
template <class F>
void for_each_tile(const key_ranges& r, std::int64_t tile, std::int64_t skv, F&& f) {
  std::int64_t next = 0;  // the first tile not yet visited
  for (int x = 0; x < r.n; ++x)
    for (std::int64_t t = std::max(next, r.begin[x] / tile); t * tile < r.end[x]; ++t) {
      f(t * tile, std::min(skv, (t + 1) * tile));
      next = t + 1;
    }
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
