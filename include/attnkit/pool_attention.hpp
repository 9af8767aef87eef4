// pool_attention: one flash_attention call for a batch of sequences over their
// caches in a kv_pool, each with its own query rows (decode steps and prefill
// chunks mixed). Like cached_attention it sits above both wings: the pool's
// batch tables hold one paged sequence per (KV head, sequence), and q, o and
// lse are viewed as one block per KV head (attention_args: blocks of packed
// rows), so heads of different lengths in different sequences take one call.
//
//   pool.gather(layer, ids, batch);
//   pool_attention(q, pool, batch, cu, o, params, lse, kw, backend);
//
// Masks align to each head's length (the rows just appended are its tail).
// Key weights, per KV head, land in out (hkv, sequences, >= longest head);
// sequence_key_weights(out, s) is sequence s's (hkv, ...) slice, the view a
// policy's observe takes.
#pragma once

#include <cstdint>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/key_weights_arg.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/cached_attention.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/view_checks.hpp"
#include "attnkit/kv/pool.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// Sequence s's key weights, (hkv, capacity), from out (hkv, sequences, capacity).
inline tensor_view<const float, 2> sequence_key_weights(const tensor_view<const float, 3>& out, std::int64_t s) {
  ATTNKIT_CHECK(s >= 0 && s < out.extent(1), "sequence_key_weights: sequence ", s, " is outside [0, ", out.extent(1),
                ")");
  return tensor_view<const float, 2>(out.data_handle() + s * out.stride(1), {out.extent(0), out.extent(2)},
                                     {out.stride(0), out.stride(2)});
}

namespace detail {

/// The attention_args of a pool_attention call, checked.
template <class TQ, class T, class TO>
attention_args<TQ, const T, const T, TO> pool_args(const tensor_view<TQ, 4>& q, const kv_pool<T>& pool,
                                                   const kv_batch& batch, const tensor_view<const std::int64_t, 1>& cu,
                                                   const tensor_view<TO, 4>& o, const tensor_view<float, 3>& lse,
                                                   const key_weights& kw) {
  constexpr const char* fn = "pool_attention";
  const std::int64_t hkv = pool.options().hkv, n = batch.sequences;
  check_view(fn, "q", q, true);
  check_view(fn, "o", o, true);
  check_view(fn, "lse", lse, false);
  check_view(fn, "cu_seqlens_q", cu, false);
  ATTNKIT_CHECK(batch.heads == hkv && static_cast<std::int64_t>(batch.last.size()) == n * hkv, fn,
                ": the batch was not gathered from this pool (", batch.heads, " heads, the pool ", hkv, ")");
  ATTNKIT_CHECK(cu.extent(0) == n + 1, fn, ": cu_seqlens_q must hold sequences + 1 = ", n + 1, " entries, got ",
                cu.extent(0));
  ATTNKIT_CHECK(q.extent(0) == 1 && o.extent(0) == 1, fn, ": q and o pack every sequence's rows (extent(0) = 1), got ",
                q.extent(0), " and ", o.extent(0));
  ATTNKIT_CHECK(q.extent(1) % hkv == 0 && o.extent(1) == q.extent(1), fn, ": q.extent(1) (hq) = ", q.extent(1),
                " must be a multiple of the pool's hkv = ", hkv, " and equal o.extent(1) = ", o.extent(1));
  ATTNKIT_CHECK(!is_given(lse) || (lse.extent(0) == 1 && lse.extent(1) == q.extent(1)), fn,
                ": lse must be (1, hq, total)");
  auto a = make_attention_args(group_by_kv_head(q, hkv), pool.keys(batch), pool.values(batch),
                               group_by_kv_head(o, hkv));
  a.cu_seqlens_q = cu;
  a.lse = is_given(lse) ? group_by_kv_head(lse, hkv) : lse;
  if (is_given(kw)) {
    const tensor_view<float, 3>& w = kw.out;
    check_view(fn, "key_weights.out", w, true);
    ATTNKIT_CHECK(w.extent(0) == hkv && w.extent(1) == n && (n <= 1 || w.stride(0) == n * w.stride(1)), fn,
                  ": key_weights.out must be (hkv = ", hkv, ", sequences = ", n,
                  ", capacity) with its first two dims packed (stride(0) = sequences * stride(1))");
    a.kw.row_weights = kw.row_weights;
    a.kw.out = tensor_view<float, 3>(w.data_handle(), {hkv * n, 1, w.extent(2)},
                                     {n <= 1 ? w.stride(0) : w.stride(1), w.stride(1), w.stride(2)});
  }
  return a;
}

}  // namespace detail

/// o = attention of each sequence's query rows over its cache, for a batch
/// gathered by kv_pool::gather: sequence s (ids[s] of the gather) has rows
/// [cu(s), cu(s+1)) of q, and head h of q reads KV head h / (hq / hkv) with
/// that head's own length. Optional: lse (1, hq, total); key weights with out
/// (hkv, sequences, >= longest head) summed over each GQA group, row_weights
/// (total) over the packed rows. Every sequence's result is the same bits as
/// a call with that sequence alone.
template <class TQ, class T, class TO, class Backend = detail::cached_backend>
void pool_attention(tensor_view<TQ, 4> q,  // (1, hq, total, d)
                    const kv_pool<T>& pool, const kv_batch& batch,
                    tensor_view<const std::int64_t, 1> cu_seqlens_q,  // (sequences + 1)
                    tensor_view<TO, 4> o,                             // (1, hq, total, dv)
                    const attention_params& params = {}, tensor_view<float, 3> lse = {}, const key_weights& kw = {},
                    const Backend& backend = {}) {
  auto a = detail::pool_args(q, pool, batch, cu_seqlens_q, o, lse, kw);
  a.params = params;
  flash_attention(a, backend);
}

/// Scratch bytes of the same pool_attention call; lend it through backend.scratch to avoid allocating.
template <class TQ, class T, class TO, class Backend = detail::cached_backend>
std::size_t pool_attention_workspace_size(tensor_view<TQ, 4> q, const kv_pool<T>& pool, const kv_batch& batch,
                                          tensor_view<const std::int64_t, 1> cu_seqlens_q, tensor_view<TO, 4> o,
                                          tensor_view<float, 3> lse = {}, const key_weights& kw = {},
                                          const Backend& backend = {}) {
  return flash_attention_workspace_size(detail::pool_args(q, pool, batch, cu_seqlens_q, o, lse, kw), backend);
}

ATTNKIT_END_NAMESPACE
