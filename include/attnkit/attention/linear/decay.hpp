// How a linear-attention state forgets. Every variant runs one recurrence,
//   S_t = diag(a_t) S_{t-1} + k_t v_tᵀ,    a_t = exp(g_t),  g_t <= 0,
// and differs only in the grain of its log decay g:
//   none         g = 0: plain causal linear attention (and BASED)
//   per head     g (h): a fixed decay per head (Lightning, RetNet)
//   per token    g (b, h, t): one data-dependent scalar per token (Mamba2/SSD, simple GLA)
//   per channel  g (b, h, t, K): one per key channel (GLA)
// Decay stays in log space so every exponent a kernel takes is <= 0 and
// nothing overflows; g = -inf is allowed and clears the state (a sequence boundary).
#pragma once

#include <cmath>
#include <cstdint>

#include "attnkit/attention/validate.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"

namespace attnkit {

struct linear_decay {
  tensor_view<const float, 1> per_head;     ///< (h) log decay of each head
  tensor_view<const float, 3> per_token;    ///< (b, h, t)
  tensor_view<const float, 4> per_channel;  ///< (b, h, t, K)

  /// Log decay applied to channel x of head (b, h) when token t arrives.
  float operator()(std::int64_t b, std::int64_t h, std::int64_t t, std::int64_t x) const {
    if (!per_channel.empty()) return per_channel(b, h, t, x);
    if (!per_token.empty()) return per_token(b, h, t);
    if (!per_head.empty()) return per_head(h);
    return 0.0f;
  }

  /// Whether every channel shares the token's decay (a scalar per token).
  bool scalar() const { return per_channel.empty(); }
};

namespace detail {

/// Log gates must be <= 0 or -inf; NaN and positive values are rejected.
inline void check_log_gate(const char* fn, const char* name, float g) {
  ATTNKIT_CHECK(g <= 0.0f, fn, ": ", name, " entries must be log decays <= 0 (or -inf), got ", g);
}

/// check_log_gate over n gates `stride` apart: one vectorizable pass, then a
/// second only to name the first bad gate.
inline void check_log_gates(const char* fn, const char* name, const float* g, std::int64_t n, std::int64_t stride) {
  bool ok = true;
  for (std::int64_t i = 0; i < n; ++i) ok &= g[i * stride] <= 0.0f;
  for (std::int64_t i = 0; !ok && i < n; ++i) check_log_gate(fn, name, g[i * stride]);
}

/// Checks decay against (b, h, t, K): at most one grain given, its shape, and g <= 0.
inline void check_decay(const char* fn, const linear_decay& d, std::int64_t b, std::int64_t h, std::int64_t t,
                        std::int64_t K) {
  const int given = is_given(d.per_head) + is_given(d.per_token) + is_given(d.per_channel);
  ATTNKIT_CHECK(given <= 1, fn, ": give at most one of decay.per_head, decay.per_token, decay.per_channel");
  if (is_given(d.per_head)) {
    check_view(fn, "decay.per_head", d.per_head, false);
    check_extent(fn, "decay.per_head", d.per_head, 0, "h", h, "q.extent(1)");
    check_log_gates(fn, "decay.per_head", d.per_head.data_handle(), h, d.per_head.stride(0));
  }
  if (is_given(d.per_token)) {
    check_view(fn, "decay.per_token", d.per_token, false);
    check_extent(fn, "decay.per_token", d.per_token, 0, "b", b, "q.extent(0)");
    check_extent(fn, "decay.per_token", d.per_token, 1, "h", h, "q.extent(1)");
    check_extent(fn, "decay.per_token", d.per_token, 2, "t", t, "q.extent(2)");
    for (std::int64_t i = 0; i < b; ++i)
      for (std::int64_t j = 0; j < h; ++j)
        check_log_gates(fn, "decay.per_token", &d.per_token(i, j, 0), t, d.per_token.stride(2));
  }
  if (is_given(d.per_channel)) {
    check_view(fn, "decay.per_channel", d.per_channel, false);
    check_extent(fn, "decay.per_channel", d.per_channel, 0, "b", b, "q.extent(0)");
    check_extent(fn, "decay.per_channel", d.per_channel, 1, "h", h, "q.extent(1)");
    check_extent(fn, "decay.per_channel", d.per_channel, 2, "t", t, "q.extent(2)");
    check_extent(fn, "decay.per_channel", d.per_channel, 3, "K", K, "q.extent(3)");
    for (std::int64_t i = 0; i < b; ++i)
      for (std::int64_t j = 0; j < h; ++j)
        for (std::int64_t r = 0; r < t; ++r)
          check_log_gates(fn, "decay.per_channel", &d.per_channel(i, j, r, 0), K, d.per_channel.stride(3));
  }
}

}  // namespace detail
}  // namespace attnkit
