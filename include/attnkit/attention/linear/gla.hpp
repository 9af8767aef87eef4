// Gated linear attention (GLA, Yang et al. 2023): data-dependent decay per
// key channel, S_t = diag(exp(g_t)) S_{t-1} + k_t v_tᵀ, o_t = scale S_tᵀ q_t,
// with g_t = logsigmoid(gate logits) / tau <= 0 (gla_log_gates).
//
// The scalar-decay members of the family are configurations of the same
// kernel (linear_decay's other grains), not new code:
//   RetNet         per head, log(1 - 2^(-5-h))              (retnet_log_decay)
//   Mamba2 / SSD   per token, g_t = Δ_t A_h with A_h < 0; k = B_t, q = C_t,
//                  v = Δ_t x_t, scale 1 (the D·x skip stays with the caller)
//   simple GLA     per token, any g_t <= 0
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "attnkit/attention/linear/linear.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// g = logsigmoid(x) / tau, elementwise, in place; fla's gate_logit_normalizer tau defaults to 16.
inline void gla_log_gates(tensor_view<float, 4> x, float tau = 16.0f) {  // (b, h, t, K)
  ATTNKIT_CHECK(tau > 0.0f && std::isfinite(tau), "gla_log_gates: tau must be finite and > 0, got ", tau);
  for (std::int64_t b = 0; b < x.extent(0); ++b)
    for (std::int64_t h = 0; h < x.extent(1); ++h)
      for (std::int64_t t = 0; t < x.extent(2); ++t)
        for (std::int64_t c = 0; c < x.extent(3); ++c) {
          const float a = x(b, h, t, c);  // logsigmoid(a) = -log(1 + e^-a), written to stay finite for large |a|
          x(b, h, t, c) = (a >= 0.0f ? -std::log1p(std::exp(-a)) : a - std::log1p(std::exp(a))) / tau;
        }
}

/// RetNet's fixed decay per head: log(1 - 2^(-5-h)), h = 0..heads-1.
inline std::vector<float> retnet_log_decay(std::int64_t heads) {
  ATTNKIT_CHECK(heads > 0, "retnet_log_decay: heads must be > 0, got ", heads);
  std::vector<float> g(static_cast<std::size_t>(heads));
  for (std::int64_t h = 0; h < heads; ++h) g[h] = static_cast<float>(std::log1p(-std::pow(2.0, -5.0 - h)));
  return g;
}

/// GLA: linear attention with per-channel log gates g (b, h, t, K); scale defaults to 1/sqrt(K).
template <class TQ, class TK, class TV, class TO, class Backend>
void gla_attention(tensor_view<TQ, 4> q,  // (b, h, t, K)
                   tensor_view<TK, 4> k,  // (b, h, t, K)
                   tensor_view<TV, 4> v,  // (b, h, t, V)
                   tensor_view<TO, 4> o,  // (b, h, t, V)
                   tensor_view<const float, 4> g,  // (b, h, t, K)
                   const linear_state& state, const linear_params& params, const Backend& backend) {
  linear_decay decay;
  decay.per_channel = g;
  ATTNKIT_CHECK(detail::is_given(g), "gla_attention: g (b, h, t, K) is required");
  linear_attention(q, k, v, o, decay, state, params, backend);
}

ATTNKIT_END_NAMESPACE
