// Variable-length batches of linear attention, packed as FlashAttention packs
// them: the sequences' tokens back to back along t of a batch of one, and
// cu_seqlens (N + 1) giving sequence i the rows [cu_seqlens[i], cu_seqlens[i+1]).
// Each sequence has its own state slot (state.s (N, h, K, V), state.z (N, h, K)),
// so a continuous-batching engine can prefill some sequences and decode others
// in one call. The result is the per-sequence loop; cpu<Arch> runs its
// (sequence, head) pairs as parallel work items.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attnkit/attention/linear/linear.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"

ATTNKIT_BEGIN_NAMESPACE

namespace detail {

/// Checks a packed call whole, before any sequence runs: cu_seqlens, the tensors
/// and gates over all tokens, and one state slot per sequence. Returns the
/// packed shape (b = 1, t = total).
template <class TQ, class TK, class TV, class TO>
linear_shape check_varlen_call(const char* fn, const tensor_view<TQ, 4>& q, const tensor_view<TK, 4>& k,
                               const tensor_view<TV, 4>& v, const tensor_view<TO, 4>& o,
                               tensor_view<const std::int64_t, 1> cu_seqlens, const linear_decay& decay,
                               const linear_state& state, const linear_params& params, const executor& exec) {
  check_view(fn, "cu_seqlens", cu_seqlens, false);
  ATTNKIT_CHECK(cu_seqlens.extent(0) >= 1, fn, ": cu_seqlens must hold N + 1 >= 1 entries, got 0");
  const std::int64_t n = cu_seqlens.extent(0) - 1, total = q.extent(2);
  ATTNKIT_CHECK(q.extent(0) == 1, fn, ": packed sequences need q.extent(0) = 1, got ", q.extent(0));
  ATTNKIT_CHECK(n >= 0 && cu_seqlens(0) == 0 && cu_seqlens(n) == total, fn,
                ": cu_seqlens must run from 0 to q.extent(2) = ", total);
  for (std::int64_t i = 0; i < n; ++i)
    ATTNKIT_CHECK(cu_seqlens(i) <= cu_seqlens(i + 1), fn, ": cu_seqlens must not decrease, got ", cu_seqlens(i),
                  " then ", cu_seqlens(i + 1));
  const linear_shape sh = check_linear_call(fn, q, k, v, o, decay, linear_state{}, params, exec);
  check_linear_state(fn, state, n, sh.h, sh.K, sh.V, params.normalize);
  return sh;
}

/// fn(i, a, b, decay, state): sequence i's rows [a, b) and its slices of decay and state.
template <class Fn>
void for_each_sequence(tensor_view<const std::int64_t, 1> cu_seqlens, const linear_decay& decay,
                       const linear_state& state, Fn&& fn) {
  for (std::int64_t i = 0; i + 1 < cu_seqlens.extent(0); ++i) {
    const std::int64_t a = cu_seqlens(i), b = cu_seqlens(i + 1);
    linear_decay d = decay;
    if (is_given(d.per_token)) d.per_token = d.per_token.slice(2, a, b);
    if (is_given(d.per_channel)) d.per_channel = d.per_channel.slice(2, a, b);
    linear_state s;
    if (is_given(state.s)) s.s = state.s.slice(0, i, i + 1);
    if (is_given(state.z)) s.z = state.z.slice(0, i, i + 1);
    fn(i, a, b, d, s);
  }
}

}  // namespace detail

/// linear_attention over packed sequences; q, k (1, h, total, K), v, o (1, h, total, V),
/// cu_seqlens (N + 1) from 0 to total, non-decreasing; decay grains as usual over total.
/// The whole call is checked before any output is written.
template <class TQ, class TK, class TV, class TO, class Backend>
void linear_attention_varlen(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                             tensor_view<const std::int64_t, 1> cu_seqlens, const linear_decay& decay,
                             const linear_state& state, const linear_params& params, const Backend& backend) {
  detail::check_varlen_call("linear_attention_varlen", q, k, v, o, cu_seqlens, decay, state, params,
                            executor::serial());
  detail::for_each_sequence(cu_seqlens, decay, state,
                            [&](std::int64_t, std::int64_t a, std::int64_t b, const linear_decay& d,
                                const linear_state& s) {
                              if (a < b)
                                linear_attention(q.slice(2, a, b), k.slice(2, a, b), v.slice(2, a, b),
                                                 o.slice(2, a, b), d, s, params, backend);
                            });
}

#if ATTNKIT_HAS_XSIMD
/// linear_attention_varlen on cpu<Arch>: the work items are (sequence, head)
/// pairs, so a batch of short sequences or decode steps keeps every thread busy.
template <class Arch, class TQ, class TK, class TV, class TO>
void linear_attention_varlen(tensor_view<TQ, 4> q,  // (1, h, total, K)
                             tensor_view<TK, 4> k,  // (1, h, total, K)
                             tensor_view<TV, 4> v,  // (1, h, total, V)
                             tensor_view<TO, 4> o,  // (1, h, total, V)
                             tensor_view<const std::int64_t, 1> cu_seqlens, const linear_decay& decay,
                             const linear_state& state, const linear_params& params, const cpu<Arch>& backend) {
  const linear_shape packed = detail::check_varlen_call("linear_attention_varlen", q, k, v, o, cu_seqlens, decay,
                                                        state, params, backend.exec);
  const std::int64_t n = cu_seqlens.extent(0) - 1, h = packed.h, K = packed.K, V = packed.V;
  if (n * h == 0 || V == 0) return;
  using call_t = detail::linear_call<TQ, TK, TV, TO>;
  std::vector<linear_decay> decays;  // per sequence, reserved: the calls hold references to them
  std::vector<linear_state> states;
  decays.reserve(static_cast<std::size_t>(n));
  states.reserve(static_cast<std::size_t>(n));
  std::vector<call_t> calls;
  detail::for_each_sequence(cu_seqlens, decay, state,
                            [&](std::int64_t, std::int64_t a, std::int64_t b, const linear_decay& d,
                                const linear_state& s) {
                              decays.push_back(d);
                              states.push_back(s);
                              linear_shape sh = packed;
                              sh.t = b - a;
                              calls.push_back(call_t{q.slice(2, a, b), k.slice(2, a, b), v.slice(2, a, b),
                                                     o.slice(2, a, b), decays.back(), states.back(), sh,
                                                     params.normalize, params.eps});
                            });
  std::int64_t longest = 0;
  for (const call_t& c : calls) longest = std::max(longest, c.sh.t);
  const detail::linear_plan<Arch> plan("linear_attention_varlen", std::min(params.chunk, longest), K, V);
  detail::scratch_arena arena("linear_attention_varlen", backend.scratch, detail::slot_bytes(plan, backend.exec));
  float* base = detail::take_slots(arena, plan, backend.exec);
  parallel_for_slots(backend.exec, n * h, [&](std::int64_t item, std::int64_t slot) {
    const call_t& call = calls[static_cast<std::size_t>(item / h)];
    if (call.sh.t > 0) call.head(0, item % h, plan, base + static_cast<std::size_t>(slot) * plan.slot_floats());
  });
}
#endif

ATTNKIT_END_NAMESPACE
