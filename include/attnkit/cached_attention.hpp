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
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/view_checks.hpp"
#include "attnkit/kv/cache.hpp"

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
  flash_attention(c.q, cache.keys(), cache.values(), c.o, params, c.lse, c.kw, backend);
}

/// Scratch bytes of cached_attention(q, cache, o, params, lse, kw, backend) for
/// the cache as it is now; lend it through backend.scratch to avoid allocating.
template <class TQ, class T, class TO, class Backend = detail::cached_backend>
std::size_t cached_attention_workspace_size(tensor_view<TQ, 4> q, const kv_cache<T>& cache, tensor_view<TO, 4> o,
                                            tensor_view<float, 3> lse = {}, const key_weights& kw = {},
                                            const Backend& backend = {}) {
  const detail::cached_call<TQ, T, TO> c(q, cache, o, lse, kw);
  return flash_attention_workspace_size(c.q, cache.keys(), cache.values(), backend, c.lse, c.kw);
}

ATTNKIT_END_NAMESPACE
