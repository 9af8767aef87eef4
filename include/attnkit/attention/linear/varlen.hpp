// Variable-length batches of linear attention, packed as FlashAttention packs
// them: the sequences' tokens back to back along t of a batch of one, and
// cu_seqlens (N + 1) giving sequence i the rows [cu_seqlens[i], cu_seqlens[i+1]).
// Each sequence has its own state slot (state.s (N, h, K, V), state.z (N, h, K)),
// so a continuous-batching engine can prefill some sequences and decode others
// in one call. The result is, by construction, the per-sequence loop.
#pragma once

#include <cstdint>

#include "attnkit/attention/linear/linear.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/core/error.hpp"

namespace attnkit {

/// linear_attention over packed sequences; q, k (1, h, total, K), v, o (1, h, total, V),
/// cu_seqlens (N + 1) from 0 to total, non-decreasing; decay grains as usual over total.
template <class TQ, class TK, class TV, class TO, class Backend>
void linear_attention_varlen(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                             tensor_view<const std::int64_t, 1> cu_seqlens, const linear_decay& decay,
                             const linear_state& state, const linear_params& params, const Backend& backend) {
  constexpr const char* fn = "linear_attention_varlen";
  const std::int64_t n = cu_seqlens.extent(0) - 1, total = q.extent(2);
  ATTNKIT_CHECK(q.extent(0) == 1, fn, ": packed sequences need q.extent(0) = 1, got ", q.extent(0));
  ATTNKIT_CHECK(n >= 0 && cu_seqlens(0) == 0 && cu_seqlens(n) == total, fn,
                ": cu_seqlens must run from 0 to q.extent(2) = ", total);
  for (std::int64_t i = 0; i < n; ++i)
    ATTNKIT_CHECK(cu_seqlens(i) <= cu_seqlens(i + 1), fn, ": cu_seqlens must not decrease, got ", cu_seqlens(i),
                  " then ", cu_seqlens(i + 1));
  ATTNKIT_CHECK(!detail::is_given(state.s) || state.s.extent(0) == n, fn, ": state.s.extent(0) must be the ", n,
                " sequences, got ", state.s.extent(0));
  ATTNKIT_CHECK(!detail::is_given(state.z) || state.z.extent(0) == n, fn, ": state.z.extent(0) must be the ", n,
                " sequences, got ", state.z.extent(0));
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t a = cu_seqlens(i), b = cu_seqlens(i + 1);
    if (a == b) continue;
    linear_decay d = decay;
    if (detail::is_given(d.per_token)) d.per_token = d.per_token.slice(2, a, b);
    if (detail::is_given(d.per_channel)) d.per_channel = d.per_channel.slice(2, a, b);
    linear_state s;
    if (detail::is_given(state.s)) s.s = state.s.slice(0, i, i + 1);
    if (detail::is_given(state.z)) s.z = state.z.slice(0, i, i + 1);
    linear_attention(q.slice(2, a, b), k.slice(2, a, b), v.slice(2, a, b), o.slice(2, a, b), d, s, params, backend);
  }
}

}  // namespace attnkit
