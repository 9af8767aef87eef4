// cached_attention: flash_attention over a kv_cache. It sits above both wings
// (attention/ and kv/), which never include each other: the cache hands out
// paged views with one sequence per KV head, and this call views q, o and the
// outputs as (hkv, group, ...) to match, so one call covers every head, heads
// of different lengths (DuoAttention, per-head H2O) included.
#pragma once

#include <cstdint>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/kv/cache.hpp"

namespace attnkit {
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

/// o = attention of q over the rows the cache holds; head h of q reads KV head
/// h / (hq / hkv) with its own length, and masks align to that length (a new
/// chunk appended to the cache is its tail). Optional: lse (1, hq, sq), and key
/// weights with out (1, hq or hkv, longest head) — entries past a head's length are 0.
template <class TQ, class T, class TO, class Backend = cpu<xsimd::default_arch>>
void cached_attention(tensor_view<TQ, 4> q,  // (1, hq, sq, d)
                      const kv_cache<T>& cache,
                      tensor_view<TO, 4> o,  // (1, hq, sq, dv)
                      const attention_params& params = {}, tensor_view<float, 3> lse = {},
                      const key_weights& kw = {}, const Backend& backend = {}) {
  constexpr const char* fn = "cached_attention";
  const std::int64_t hkv = cache.heads();
  ATTNKIT_CHECK(q.extent(0) == 1 && o.extent(0) == 1, fn, ": q and o hold one sequence (extent(0) = 1), got ",
                q.extent(0), " and ", o.extent(0));
  ATTNKIT_CHECK(q.extent(1) % hkv == 0 && o.extent(1) == q.extent(1), fn, ": q.extent(1) (hq) = ", q.extent(1),
                " must be a multiple of the cache's hkv = ", hkv, " and equal o.extent(1) = ", o.extent(1));
  ATTNKIT_CHECK(!detail::is_given(lse) || (lse.extent(0) == 1 && lse.extent(1) == q.extent(1)), fn,
                ": lse must be (1, hq, sq)");
  key_weights grouped = kw;
  if (detail::is_given(kw)) {
    ATTNKIT_CHECK(kw.out.extent(0) == 1 && (kw.out.extent(1) == hkv || kw.out.extent(1) == q.extent(1)), fn,
                  ": key_weights.out must be (1, hq or hkv, longest head)");
    grouped.out = detail::group_by_kv_head(kw.out, hkv);
  }
  const tensor_view<float, 3> grouped_lse = detail::is_given(lse) ? detail::group_by_kv_head(lse, hkv) : lse;
  flash_attention(detail::group_by_kv_head(q, hkv), cache.keys(), cache.values(), detail::group_by_kv_head(o, hkv),
                  params, grouped_lse, grouped, backend);
}

}  // namespace attnkit
