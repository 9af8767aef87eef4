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

#include <atomic>
#include <cmath>
#include <cstdint>

#include "attnkit/attention/validate.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// log(FLT_MIN): a decay through a gate below this is under the smallest normal
/// float, so kernels may treat the gate as a reset (-inf), which it equals in fp32
/// up to denormals (which the cpu kernels flush anyway).
inline constexpr float gate_floor = -87.336544f;

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

/// Whether n gates `stride` apart are all <= 0 (or -inf). Contiguous gates fold
/// into 16 int lanes (a fixed-width loop, so it vectorizes even at -O2).
inline bool log_gates_ok(const float* g, std::int64_t n, std::int64_t stride) {
  int lane_bad[16] = {};
  std::int64_t i = 0;
  if (stride == 1)
    for (; i + 16 <= n; i += 16)
      for (int j = 0; j < 16; ++j) lane_bad[j] |= !(g[i + j] <= 0.0f);
  int bad = 0;
  for (; i < n; ++i) bad |= !(g[i * stride] <= 0.0f);
  for (int j = 0; j < 16; ++j) bad |= lane_bad[j];
  return bad == 0;
}

/// check_log_gate over n gates `stride` apart: one fast pass, then a second only
/// to name the first bad gate.
inline void check_log_gates(const char* fn, const char* name, const float* g, std::int64_t n, std::int64_t stride) {
  if (log_gates_ok(g, n, stride)) return;
  for (std::int64_t i = 0; i < n; ++i) check_log_gate(fn, name, g[i * stride]);
}

/// Checks decay against (b, h, t, K): at most one grain given, its shape, and g <= 0.
/// Per-channel gates are as large as q, so a large pass runs over (b, h) on exec.
inline void check_decay(const char* fn, const linear_decay& d, std::int64_t b, std::int64_t h, std::int64_t t,
                        std::int64_t K, const executor& exec = executor::serial()) {
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
    for (std::int64_t i = 0; i < b && t > 0; ++i)  // an empty view may be null: take no address in it
      for (std::int64_t j = 0; j < h; ++j)
        check_log_gates(fn, "decay.per_token", &d.per_token(i, j, 0), t, d.per_token.stride(2));
  }
  if (is_given(d.per_channel)) {
    const tensor_view<const float, 4>& g = d.per_channel;  // (b, h, t, K)
    check_view(fn, "decay.per_channel", g, false);
    check_extent(fn, "decay.per_channel", g, 0, "b", b, "q.extent(0)");
    check_extent(fn, "decay.per_channel", g, 1, "h", h, "q.extent(1)");
    check_extent(fn, "decay.per_channel", g, 2, "t", t, "q.extent(2)");
    check_extent(fn, "decay.per_channel", g, 3, "K", K, "q.extent(3)");
    if (g.empty()) return;  // may be null: take no address in it
    const bool packed = g.stride(3) == 1 && g.stride(2) == K;  // a head's (t, K) gates are one run
    const auto head_ok = [&](std::int64_t i, std::int64_t j) {
      if (packed) return log_gates_ok(&g(i, j, 0, 0), t * K, 1);
      bool ok = true;
      for (std::int64_t r = 0; ok && r < t; ++r) ok = log_gates_ok(&g(i, j, r, 0), K, g.stride(3));
      return ok;
    };
    std::atomic<bool> all_ok{true};
    const bool large = b * h * t * K >= (std::int64_t{1} << 20);  // else a parallel region costs more than the pass
    parallel_for(large ? exec : executor::serial(), b * h, [&](std::int64_t item) {
      if (!head_ok(item / h, item % h)) all_ok.store(false, std::memory_order_relaxed);
    });
    for (std::int64_t i = 0; !all_ok && i < b; ++i)  // name the first bad gate
      for (std::int64_t j = 0; j < h; ++j)
        for (std::int64_t r = 0; r < t; ++r) check_log_gates(fn, "decay.per_channel", &g(i, j, r, 0), K, g.stride(3));
  }
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
