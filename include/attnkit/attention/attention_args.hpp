// attention_args: everything one flash_attention call takes, in one struct.
// The positional overloads of flash_attention fill it; engines that need the
// newer inputs (positions, ragged batches, a custom mask) fill it themselves:
//
//   auto args = attnkit::make_attention_args(q, k, v, o);   // k, v: strided views or paged_kv
//   args.cu_seqlens_q = cu;      // ragged: q and o are (1, hq, total, d), sequence b is rows [cu(b), cu(b+1))
//   args.k_pos = offsets;        // key j of sequence b sits at k_pos(b) + j
//   attnkit::flash_attention(args, backend);
//
// Positions: query row i of sequence b sits at q_pos(b) + i, key j at
// k_pos(b) + j. Defaults: k_pos 0, and q_pos = k_pos + skv_b - sq_b (the last
// query row at the last key: bottom-right). Given positions must be >= 0 and
// stay below 2^61. Masks, ALiBi and sinks act on positions, so a call over a
// shard of the keys (with its k_pos) computes exactly that shard's share, and
// merge_states recombines shards. A learned sink logit (params.sink_logits)
// joins the denominator of every call it is passed to: give it to one shard.
//
// Ragged calls may stack n copies of the packed layout: q (n, hq, total, d)
// with cu_seqlens_q of m + 1 entries holds n * m sequences, sequence b being
// packed sequence b % m of block b / m (pool_attention makes each KV head
// a block, so heads of different lengths share one call); k, v, positions and
// key weights then count n * m sequences.
//
// lse is the natural log of the softmax denominator.
#pragma once

#include <cstdint>
#include <type_traits>

#include "attnkit/attention/key_weights_arg.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/sparse/layout.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/kv_scales.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// K or V in either form the kernels read: strided (b, hkv, skv, d) or a paged
/// pool; quantized types (int8, fp8_e4m3, fp8_e5m2) carry their scales
/// (core/kv_scales.hpp), which the kernels apply in registers.
template <class T>
struct kv_input {
  tensor_view<T, 4> strided;  // (b, hkv, skv, d); unused when paged
  paged_kv<T> paged;          // (num_pages, hkv, page_size, d) + table; used when is_paged
  bool is_paged = false;
  kv_scales scales;           // quantized T only

  kv_input() = default;
  kv_input(const tensor_view<T, 4>& t) : strided(t) {}          // NOLINT: implicit on purpose
  kv_input(const paged_kv<T>& p) : paged(p), is_paged(true) {}  // NOLINT
  kv_input(const tensor_view<T, 4>& t, const kv_scales& s) : strided(t), scales(s) {}
  kv_input(const paged_kv<T>& p, const kv_scales& s) : paged(p), is_paged(true), scales(s) {}
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_const_v<U>>>
  kv_input(const kv_input<U>& o)
      : strided(o.strided), paged{o.paged.pages, o.paged.table}, is_paged(o.is_paged), scales(o.scales) {}
};

/// A caller's mask on top of the params' masks (tree attention for speculative
/// decoding, document masks): row r of the call sees key j of its sequence iff
/// bit j % 8 of bits(h, r, j / 8) is set (little-endian bit order). Rows are
/// b * sq (row i of sequence b is b * sq + i), or the packed rows with
/// cu_seqlens_q; extent(0) is 1 (all heads) or hq; extent(2) must cover the
/// longest sequence's keys. Tiles whose bits are all zero are skipped.
struct custom_mask {
  tensor_view<const std::uint8_t, 3> bits;  // (1 or hq, rows, >= ceil(skv / 8)); empty: none
};

template <class TQ, class TK, class TV, class TO>
struct attention_args {
  tensor_view<TQ, 4> q;       // (b, hq, sq, d); ragged: (1 or n blocks, hq, total, d)
  kv_input<TK> k;             // (b, hkv, skv, d) or paged; int8 / fp8 with k.scales
  kv_input<TV> v;             // (b, hkv, skv, dv) or paged; int8 / fp8 with v.scales
  tensor_view<TO, 4> o;       // (b, hq, sq, dv); ragged: like q
  attention_params params;
  tensor_view<float, 3> lse;  // like q without d; natural log; empty: not returned
  key_weights kw;             // key_weights_arg.hpp: (b, hq or hkv, skv); ragged row_weights cover the packed rows
  tensor_view<const std::int64_t, 1> cu_seqlens_q;  // (m + 1) ragged rows of each block; empty: b sequences of sq
  tensor_view<const std::int64_t, 1> q_pos;         // (b) position of each sequence's first query row
  tensor_view<const std::int64_t, 1> k_pos;         // (b) position of each sequence's first key
  custom_mask mask;
  block_sparse_layout sparse;  // sparse/layout.hpp: which key blocks each query block attends; unset: all
};

/// The largest calls an engine will make, for flash_attention_workspace_bound:
/// at most b sequences of at most sq query rows and skv keys each.
struct attention_limits {
  std::int64_t b = 0, hq = 0, hkv = 0, sq = 0, skv = 0, d = 0, dv = 0;
  bool key_weights = false;  // some call requests key weights
  bool sparse = false;       // some call has a block-sparse layout
};

namespace detail {
template <class KS>
struct kv_element;
template <class T>
struct kv_element<tensor_view<T, 4>> {
  using type = T;
};
template <class T>
struct kv_element<paged_kv<T>> {
  using type = T;
};
}  // namespace detail

/// attention_args with the four tensors set and every option at its default;
/// k and v are strided views or paged_kv.
template <class TQ, class KS, class VS, class TO>
auto make_attention_args(const tensor_view<TQ, 4>& q, const KS& k, const VS& v, const tensor_view<TO, 4>& o) {
  attention_args<TQ, typename detail::kv_element<KS>::type, typename detail::kv_element<VS>::type, TO> a;
  a.q = q;
  a.k = k;
  a.v = v;
  a.o = o;
  return a;
}

ATTNKIT_END_NAMESPACE
