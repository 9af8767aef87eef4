// BASED (Arora et al. 2024): linear attention over the 2nd-order Taylor feature
// map (feature_maps.hpp), no decay,
//   o_t = Σ_{s<=t} (1 + s_ts + s_ts²/2) v_s / (Σ_{s<=t} (1 + s_ts + s_ts²/2) + eps),
//   s_ts = q_t·k_s / sqrt(d),
// paired in other layers with exact sliding-window softmax attention.
//
// based_attention is linear attention over φ(q), φ(k) with scale 1 and the
// normalizer, or (based_output::numerator) without it, as ThunderKittens' kernel
// does before an RMSNorm. The reference expands the features; cpu<Arch> runs the
// chunkwise form by Taylor order (based_cpu.hpp). Its state is s (b, h, D', V)
// and z (b, h, D') with D' = taylor_features(map, d): O(1) per decode step.
//
// The window layers: a window of size w looks back w/2 tokens (Based maps w to
// FlashAttention's window (w/2, 0)); based_window_params gives flash_attention
// that mask for prefill, and window_ring keeps the last w/2 + 1 keys and values
// for decode, where every row it holds is visible (softmax ignores their order).
#pragma once

#include <algorithm>
#include <cstdint>

#include "attnkit/attention/linear/feature_maps.hpp"
#include "attnkit/attention/linear/linear.hpp"
#if ATTNKIT_HAS_XSIMD
#include "attnkit/attention/linear/based_cpu.hpp"
#include "attnkit/backend/cpu/flush_denormals.hpp"
#endif
#include "attnkit/attention/params.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

enum class based_output { normalized, numerator };

struct based_params {
  taylor_map map = taylor_map::symmetric;
  based_output output = based_output::normalized;
  float eps = 1e-12f;       ///< Based's; fla uses 1e-6
  std::int64_t chunk = 64;  ///< chunkwise rows per chunk
};

/// State extents for based_attention: s (b, h, D', V), z (b, h, D').
inline std::int64_t based_state_features(const based_params& p, std::int64_t d) { return taylor_features(p.map, d); }

namespace detail {

/// linear_attention's parameters for BASED's layer: scale 1, the normalizer on request.
inline linear_params based_linear_params(const based_params& p) {
  linear_params lp;
  lp.scale = 1.0f;
  lp.normalize = p.output == based_output::normalized;
  lp.eps = p.eps;
  lp.chunk = p.chunk;
  return lp;
}

/// d >= 1 (φ scales by d^(-1/4)) and small enough that D' = O(d²) features fit.
inline void check_based_dim(const char* fn, std::int64_t d) {
  ATTNKIT_CHECK(d >= 1 && d <= (std::int64_t{1} << 24), fn, ": q.extent(3) (d) must be in [1, 2^24], got ", d);
}

/// Checks q, k (b, h, t, d), v, o (b, h, t, V), params, and the state against D' features.
template <class TQ, class TK, class TV, class TO>
void check_based_call(const char* fn, const tensor_view<TQ, 4>& q, const tensor_view<TK, 4>& k,
                      const tensor_view<TV, 4>& v, const tensor_view<TO, 4>& o, const linear_state& state,
                      const based_params& p) {
  const linear_params lp = based_linear_params(p);
  check_linear_call(fn, q, k, v, o, linear_decay{}, linear_state{}, lp);
  check_based_dim(fn, q.extent(3));
  check_linear_state(fn, state, q.extent(0), q.extent(1), based_state_features(p, q.extent(3)), v.extent(3),
                     lp.normalize);
}

}  // namespace detail

/// BASED's linear attention; q, k (b, h, t, d), v, o (b, h, t, V). The reference
/// expands φ(q) and φ(k) into two (b, h, t, D') buffers allocated per call and
/// runs linear_attention on them.
template <class TQ, class TK, class TV, class TO>
void based_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const linear_state& state, const based_params& p, reference backend) {
  detail::check_based_call("based_attention", q, k, v, o, state, p);
  const std::int64_t D = taylor_features(p.map, q.extent(3));
  detail::check_scratch_floats("based_attention", 2.0L * q.extent(0) * q.extent(1) * q.extent(2) * D);  // φ(q), φ(k)
  tensor<float, 4> fq({q.extent(0), q.extent(1), q.extent(2), D}), fk({k.extent(0), k.extent(1), k.extent(2), D});
  taylor_feature_map(q, fq.view(), p.map);
  taylor_feature_map(k, fk.view(), p.map);
  linear_attention(fq.cview(), fk.cview(), v, o, linear_decay{}, state, detail::based_linear_params(p), backend);
}

#if ATTNKIT_HAS_XSIMD
/// Scratch bytes of based_attention(q, k, v, o, state, params, backend) for head
/// dim d and value dim V; lend them through backend.scratch to avoid allocating.
template <class Arch>
std::size_t based_attention_workspace_size(std::int64_t d, std::int64_t V, const based_params& params,
                                           const cpu<Arch>& backend) {
  constexpr const char* fn = "based_attention_workspace_size";
  detail::check_linear_sizes(fn, d, V, detail::based_linear_params(params));
  detail::check_based_dim(fn, d);
  return detail::slot_bytes(detail::based_plan<Arch>(fn, params.chunk, d, taylor_features(params.map, d), V),
                            backend.exec);
}

/// BASED's linear attention on cpu<Arch>: chunkwise by Taylor order (based_cpu.hpp),
/// features expanded per chunk only; same results and state as the reference.
template <class Arch, class TQ, class TK, class TV, class TO>
void based_attention(tensor_view<TQ, 4> q,  // (b, h, t, d)
                     tensor_view<TK, 4> k,  // (b, h, t, d)
                     tensor_view<TV, 4> v,  // (b, h, t, V)
                     tensor_view<TO, 4> o,  // (b, h, t, V)
                     const linear_state& state, const based_params& p, const cpu<Arch>& backend) {
  detail::check_based_call("based_attention", q, k, v, o, state, p);
  const std::int64_t b = q.extent(0), h = q.extent(1), d = q.extent(3);
  if (b * h * q.extent(2) == 0 || v.extent(3) == 0) return;
  const detail::based_plan<Arch> plan("based_attention", std::min(p.chunk, q.extent(2)), d, taylor_features(p.map, d),
                                      v.extent(3));
  const detail::based_call<TQ, TK, TV, TO> call{q, k, v, o, state, p.map, p.output == based_output::normalized, p.eps};
  detail::scratch_arena arena("based_attention", backend.scratch, detail::slot_bytes(plan, backend.exec));
  float* base = detail::take_slots(arena, plan, backend.exec);
  parallel_for_slots(backend.exec, b * h, [&](std::int64_t item, std::int64_t slot) {
    const simd::flush_denormals ftz;
    call.chunkwise(item / h, item % h, plan, detail::based_slot(base + slot * plan.slot_floats(), plan));
  });
}
#endif

/// flash_attention's mask for a BASED window layer of size window_size.
inline attention_params based_window_params(std::int64_t window_size) {
  ATTNKIT_CHECK(window_size >= 2, "based_window_params: window_size must be >= 2, got ", window_size);
  attention_params p;
  p.causal = true;
  p.window_left = window_size / 2;
  return p;
}

/// The decode cache of a window layer: the last window_size/2 + 1 keys and values
/// of each KV head (the newest token's included), overwritten oldest first.
template <class T>
class window_ring {
 public:
  window_ring(std::int64_t hkv, std::int64_t d, std::int64_t dv, std::int64_t window_size)
      : rows_(window_size / 2 + 1), k_({1, hkv, rows_, d}), v_({1, hkv, rows_, dv}) {
    ATTNKIT_CHECK(hkv > 0 && d > 0 && dv > 0 && window_size >= 2,
                  "window_ring: hkv, d, dv > 0 and window_size >= 2 are required, got ", hkv, ", ", d, ", ", dv, ", ",
                  window_size);
  }

  /// Adds one token: k (hkv, d), v (hkv, dv), any element type.
  template <class U, class W>
  void append(tensor_view<U, 2> k, tensor_view<W, 2> v) {
    ATTNKIT_CHECK(k.extent(0) == k_.extent(1) && k.extent(1) == k_.extent(3) && v.extent(0) == v_.extent(1) &&
                      v.extent(1) == v_.extent(3),
                  "window_ring::append: k must be (hkv, d) = (", k_.extent(1), ", ", k_.extent(3), ") and v (hkv, dv) = (",
                  v_.extent(1), ", ", v_.extent(3), ")");
    const std::int64_t row = next_ % rows_;
    for (std::int64_t h = 0; h < k_.extent(1); ++h) {
      for (std::int64_t x = 0; x < k_.extent(3); ++x) k_(0, h, row, x) = from_float<T>(to_float(k(h, x)));
      for (std::int64_t x = 0; x < v_.extent(3); ++x) v_(0, h, row, x) = from_float<T>(to_float(v(h, x)));
    }
    ++next_;
  }

  /// The rows held, (1, hkv, min(tokens, window_size/2 + 1), d) and (..., dv): what a decode query attends to, unmasked.
  tensor_view<const T, 4> keys() const { return k_.cview().slice(2, 0, std::min(next_, rows_)); }
  tensor_view<const T, 4> values() const { return v_.cview().slice(2, 0, std::min(next_, rows_)); }

 private:
  std::int64_t rows_, next_ = 0;
  tensor<T, 4> k_, v_;
};

ATTNKIT_END_NAMESPACE
