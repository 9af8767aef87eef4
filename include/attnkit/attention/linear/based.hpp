// BASED (Arora et al. 2024): linear attention over the 2nd-order Taylor feature
// map (feature_maps.hpp), no decay,
//   o_t = Σ_{s<=t} (1 + s_ts + s_ts²/2) v_s / (Σ_{s<=t} (1 + s_ts + s_ts²/2) + eps),
//   s_ts = q_t·k_s / sqrt(d),
// paired in other layers with exact sliding-window softmax attention.
//
// based_attention expands φ(q) and φ(k) and runs linear_attention on them with
// scale 1 and the normalizer, or (based_output::numerator) without it, as
// ThunderKittens' kernel does before an RMSNorm. Its state is s (b, h, D', V)
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
#include "attnkit/attention/params.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/core/tensor_view.hpp"

namespace attnkit {

enum class based_output { normalized, numerator };

struct based_params {
  taylor_map map = taylor_map::symmetric;
  based_output output = based_output::normalized;
  float eps = 1e-12f;       ///< Based's; fla uses 1e-6
  std::int64_t chunk = 64;  ///< chunkwise rows per chunk
};

/// State extents for based_attention: s (b, h, D', V), z (b, h, D').
inline std::int64_t based_state_features(const based_params& p, std::int64_t d) { return taylor_features(p.map, d); }

/// BASED's linear attention; q, k (b, h, t, d), v, o (b, h, t, V). The feature
/// expansion goes to two buffers of (b, h, t, D') floats allocated per call.
template <class TQ, class TK, class TV, class TO, class Backend>
void based_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const linear_state& state, const based_params& p, const Backend& backend) {
  for (std::size_t r = 0; r < 4; ++r)
    ATTNKIT_CHECK(k.extent(r) == q.extent(r), "based_attention: k.extent(", r, ") must equal q.extent(", r, ") = ",
                  q.extent(r), ", got ", k.extent(r));
  const std::int64_t D = taylor_features(p.map, q.extent(3));
  tensor<float, 4> fq({q.extent(0), q.extent(1), q.extent(2), D}), fk({k.extent(0), k.extent(1), k.extent(2), D});
  taylor_feature_map(q, fq.view(), p.map);
  taylor_feature_map(k, fk.view(), p.map);
  linear_params lp;
  lp.scale = 1.0f;
  lp.normalize = p.output == based_output::normalized;
  lp.eps = p.eps;
  lp.chunk = p.chunk;
  linear_attention(fq.cview(), fk.cview(), v, o, linear_decay{}, state, lp, backend);
}

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

}  // namespace attnkit
