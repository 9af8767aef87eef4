// cached_attention and pool_attention: flash_attention over a KV cache. They
// sit above both wings (attention/ and kv/), which never include each other:
// the cache hands out paged views with one sequence per KV head, and these
// calls view q, o and the outputs to match, so one call covers every head,
// heads of different lengths (DuoAttention, per-head H2O) included.
//
//   cached_attention(q, cache, o, ...)               one sequence in a kv_cache
//   pool.gather(layer, ids, batch);
//   pool_attention(q, pool, batch, cu, o, ...)       a batch of sequences in a kv_pool,
//                                                    each with its own query rows
//
// pool_attention's q, o and lse are viewed as one block per KV head
// (attention_args: blocks of packed rows), decode steps and prefill chunks
// mixed. Masks align to each head's length (the rows just appended are its
// tail). Key weights, per KV head, land in out (hkv, sequences, capacity >=
// the longest head): keys [0, longest) of every row, 0 past each head's
// length; sequence_key_weights(out, s) is sequence s's (hkv, capacity) slice,
// the view a policy's observe takes.
#pragma once

#include <algorithm>
#include <cstdint>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/key_weights_arg.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/view_checks.hpp"
#include "attnkit/kv/cache.hpp"
#include "attnkit/kv/pool.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// (1, h, ...) viewed as (hkv, h / hkv, ...): the heads of each KV head's group as one sequence.
template <class T, std::size_t R>
tensor_view<T, R> group_by_kv_head(const tensor_view<T, R>& v, std::int64_t hkv) {
  auto extents = v.extents();
  auto strides = v.strides();
  extents[0] = hkv;
  extents[1] = v.extent(1) / hkv;
  strides[0] = v.stride(1) * extents[1];
  return tensor_view<T, R>(v.data_handle(), extents, strides);
}

}  // namespace detail

namespace detail {

/// Checks a cached_attention call and returns the views it hands flash_attention.
template <class TQ, class T, class TO>
struct cached_call {
  tensor_view<TQ, 4> q;       // (hkv, group, sq, d)
  tensor_view<TO, 4> o;       // (hkv, group, sq, dv)
  tensor_view<float, 3> lse;  // (hkv, group, sq) or empty
  key_weights kw;             // out (hkv, group or 1, longest head) or empty

  cached_call(const tensor_view<TQ, 4>& q1, const kv_cache<T>& cache, const tensor_view<TO, 4>& o1,
              const tensor_view<float, 3>& lse1, const key_weights& kw1)
      : kw(kw1) {
    constexpr const char* fn = "cached_attention";
    const std::int64_t hkv = cache.heads();
    check_view(fn, "q", q1, true);  // before the regrouping multiplies its extents and strides
    check_view(fn, "o", o1, true);
    check_view(fn, "lse", lse1, false);
    if (is_given(kw1)) check_view(fn, "key_weights.out", kw1.out, true);
    ATTNKIT_CHECK(q1.extent(0) == 1 && o1.extent(0) == 1, fn,
                  ": q and o hold one sequence (extent(0) = 1), got ", q1.extent(0), " and ", o1.extent(0));
    ATTNKIT_CHECK(q1.extent(1) % hkv == 0 && o1.extent(1) == q1.extent(1), fn, ": q.extent(1) (hq) = ",
                  q1.extent(1), " must be a multiple of the cache's hkv = ", hkv, " and equal o.extent(1) = ",
                  o1.extent(1));
    ATTNKIT_CHECK(!is_given(lse1) || (lse1.extent(0) == 1 && lse1.extent(1) == q1.extent(1)), fn,
                  ": lse must be (1, hq, sq)");
    if (is_given(kw1)) {
      ATTNKIT_CHECK(kw1.out.extent(0) == 1 && (kw1.out.extent(1) == hkv || kw1.out.extent(1) == q1.extent(1)), fn,
                    ": key_weights.out must be (1, hq or hkv, longest head)");
      kw.out = group_by_kv_head(kw1.out, hkv);
    }
    q = group_by_kv_head(q1, hkv);
    o = group_by_kv_head(o1, hkv);
    lse = is_given(lse1) ? group_by_kv_head(lse1, hkv) : lse1;
  }

  attention_args<TQ, const T, const T, TO> args(const kv_cache<T>& cache, const attention_params& params) const {
    auto a = make_attention_args(q, cache.keys(), cache.values(), o);
    a.k.scales = cache.key_scales();
    a.v.scales = cache.value_scales();
    a.params = params;
    a.lse = lse;
    a.kw = kw;
    return a;
  }
};

using cached_backend = cpu_native;

}  // namespace detail

/// o = attention of q over the rows the cache holds; head h of q reads KV head
/// h / (hq / hkv) with its own length, and masks align to that length (a new
/// chunk appended to the cache is its tail). Optional: lse (1, hq, sq), and key
/// weights with out (1, hq or hkv, longest head); entries past a head's length are 0.
template <class TQ, class T, class TO, class Backend = detail::cached_backend>
void cached_attention(tensor_view<TQ, 4> q,  // (1, hq, sq, d)
                      const kv_cache<T>& cache,
                      tensor_view<TO, 4> o,  // (1, hq, sq, dv)
                      const attention_params& params = {}, tensor_view<float, 3> lse = {},
                      const key_weights& kw = {}, const Backend& backend = {}) {
  const detail::cached_call<TQ, T, TO> c(q, cache, o, lse, kw);
  flash_attention(c.args(cache, params), backend);
}

/// Scratch bytes of cached_attention(q, cache, o, params, lse, kw, backend) for
/// the cache as it is now; lend it through backend.scratch to avoid allocating.
template <class TQ, class T, class TO, class Backend = detail::cached_backend>
std::size_t cached_attention_workspace_size(tensor_view<TQ, 4> q, const kv_cache<T>& cache, tensor_view<TO, 4> o,
                                            tensor_view<float, 3> lse = {}, const key_weights& kw = {},
                                            const Backend& backend = {}) {
  const detail::cached_call<TQ, T, TO> c(q, cache, o, lse, kw);
  return flash_attention_workspace_size(c.args(cache, {}), backend);
}

/// Sequence s's key weights, (hkv, capacity), from out (hkv, sequences, capacity).
inline tensor_view<const float, 2> sequence_key_weights(const tensor_view<const float, 3>& out, std::int64_t s) {
  ATTNKIT_CHECK(s >= 0 && s < out.extent(1), "sequence_key_weights: sequence ", s, " is outside [0, ", out.extent(1),
                ")");
  return tensor_view<const float, 2>(out.data_handle() + s * out.stride(1), {out.extent(0), out.extent(2)},
                                     {out.stride(0), out.stride(2)});
}

/// The attention_args of the same pool_attention call, checked: for the options
/// pool_attention does not take (a block-sparse layout, a bitmask, positions).
/// Its sequences are (KV head, sequence) pairs, sequence s of KV head g being
/// number g * sequences + s, each with the query heads of g's group.
template <class TQ, class T, class TO>
attention_args<TQ, const T, const T, TO> pool_attention_args(const tensor_view<TQ, 4>& q, const kv_pool<T>& pool,
                                                             const kv_batch& batch,
                                                             const tensor_view<const std::int64_t, 1>& cu,
                                                             const tensor_view<TO, 4>& o,
                                                             const tensor_view<float, 3>& lse = {},
                                                             const key_weights& kw = {}) {
  using namespace detail;
  constexpr const char* fn = "pool_attention";
  const std::int64_t hkv = pool.options().hkv, n = batch.sequences;
  check_view(fn, "q", q, true);
  check_view(fn, "o", o, true);
  check_view(fn, "lse", lse, false);
  check_view(fn, "cu_seqlens_q", cu, false);
  ATTNKIT_CHECK(batch.heads == hkv && static_cast<std::int64_t>(batch.last.size()) == n * hkv &&
                    static_cast<std::int64_t>(batch.indptr.size()) == n * hkv + 1,
                fn,
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
  a.k.scales = pool.key_scales(batch);
  a.v.scales = pool.value_scales(batch);
  a.cu_seqlens_q = cu;
  a.lse = is_given(lse) ? group_by_kv_head(lse, hkv) : lse;
  if (is_given(kw)) {
    const tensor_view<float, 3>& w = kw.out;
    check_view(fn, "key_weights.out", w, true);
    std::int64_t longest = 0;  // the call writes keys [0, longest); the rest of a capacity-sized out is the caller's
    for (std::int64_t f = 0; f < n * hkv; ++f) longest = std::max(longest, a.k.paged.length(f));
    ATTNKIT_CHECK(w.extent(0) == hkv && w.extent(1) == n && w.extent(2) >= longest &&
                      (n <= 1 || w.stride(0) == n * w.stride(1)),
                  fn, ": key_weights.out must be (hkv = ", hkv, ", sequences = ", n, ", >= ", longest,
                  " keys) with its first two dims packed (stride(0) = sequences * stride(1)), got (", w.extent(0),
                  ", ", w.extent(1), ", ", w.extent(2), ")");
    a.kw.row_weights = kw.row_weights;
    a.kw.out = tensor_view<float, 3>(w.data_handle(), {hkv * n, 1, longest},
                                     {n <= 1 ? w.stride(0) : w.stride(1), w.stride(1), w.stride(2)});
  }
  return a;
}

/// o = attention of each sequence's query rows over its cache, for a batch
/// gathered by kv_pool::gather: sequence s (ids[s] of the gather) has rows
/// [cu(s), cu(s+1)) of q, and head h of q reads KV head h / (hq / hkv) with
/// that head's own length. Optional: lse (1, hq, total); key weights with out
/// (hkv, sequences, >= longest head) summed over each GQA group (keys past the
/// batch's longest head are left as they are), row_weights (total) over the
/// packed rows. Every sequence's result is the same bits as
/// a call with that sequence alone.
template <class TQ, class T, class TO, class Backend = detail::cached_backend>
void pool_attention(tensor_view<TQ, 4> q,  // (1, hq, total, d)
                    const kv_pool<T>& pool, const kv_batch& batch,
                    tensor_view<const std::int64_t, 1> cu_seqlens_q,  // (sequences + 1)
                    tensor_view<TO, 4> o,                             // (1, hq, total, dv)
                    const attention_params& params = {}, tensor_view<float, 3> lse = {}, const key_weights& kw = {},
                    const Backend& backend = {}) {
  auto a = pool_attention_args(q, pool, batch, cu_seqlens_q, o, lse, kw);
  a.params = params;
  flash_attention(a, backend);
}

/// Scratch bytes of the same pool_attention call; lend it through backend.scratch to avoid allocating.
template <class TQ, class T, class TO, class Backend = detail::cached_backend>
std::size_t pool_attention_workspace_size(tensor_view<TQ, 4> q, const kv_pool<T>& pool, const kv_batch& batch,
                                          tensor_view<const std::int64_t, 1> cu_seqlens_q, tensor_view<TO, 4> o,
                                          tensor_view<float, 3> lse = {}, const key_weights& kw = {},
                                          const Backend& backend = {}) {
  return flash_attention_workspace_size(pool_attention_args(q, pool, batch, cu_seqlens_q, o, lse, kw), backend);
}

ATTNKIT_END_NAMESPACE
