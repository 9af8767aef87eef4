// Lightning Attention (TransNormerLLM / TNL / MiniMax-01): linear attention
// with a fixed decay λ_h per head and no softmax,
//   O = [(Q Kᵀ) ⊙ M] V,   M_ts = λ^(t-s) for t >= s, else 0,
// computed block by block as an intra-block masked product plus an inter-block
// state (the chunkwise form of linear.hpp), and decoded with S = λS + k vᵀ.
// The reference kernels apply no 1/sqrt(d) scale, so the default scale is 1.
//
// The decay is given as log λ per head. Two rules are in use and they differ
// by orders of magnitude, so both are provided:
//   lightning_log_decay_fla    log λ_h = -(8/H)(1 - l/L) h,  h = 0..H-1
//                              (fla's lightning_attn, after TransNormerLLM)
//   lightning_log_decay_alibi  λ_h = exp(-slope_h (1 - l/(L-1) + 1e-5)) with
//                              ALiBi slopes (OpenNLPLab's TNL)
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "attnkit/attention/linear/linear.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// fla's rule for layer `layer` of `layers`: head 0 never decays.
inline std::vector<float> lightning_log_decay_fla(std::int64_t heads, std::int64_t layer, std::int64_t layers) {
  ATTNKIT_CHECK(heads > 0 && layers > 0 && layer >= 0 && layer < layers,
                "lightning_log_decay_fla: need heads > 0 and 0 <= layer < layers, got ", heads, ", ", layer, ", ",
                layers);
  std::vector<float> g(static_cast<std::size_t>(heads));
  for (std::int64_t h = 0; h < heads; ++h)
    g[h] = static_cast<float>(-(8.0 / heads) * (1.0 - static_cast<double>(layer) / layers) * h);
  return g;
}

/// The ALiBi slopes of `heads` heads: 2^(-8i/n) for i = 1..n with n = heads when a
/// power of two; otherwise the n = 2^floor(log2 heads) slopes, then every other
/// slope of the 2n list for the remaining heads.
inline std::vector<double> alibi_slopes(std::int64_t heads) {
  ATTNKIT_CHECK(heads > 0, "alibi_slopes: heads must be > 0, got ", heads);
  const auto powers = [](std::int64_t n) {
    std::vector<double> s;
    for (std::int64_t i = 1; i <= n; ++i) s.push_back(std::pow(2.0, -8.0 * static_cast<double>(i) / n));
    return s;
  };
  std::int64_t n = 1;
  while (2 * n <= heads) n *= 2;
  std::vector<double> s = powers(n);
  const std::vector<double> extra = powers(2 * n);
  for (std::int64_t i = 0; static_cast<std::int64_t>(s.size()) < heads; i += 2) s.push_back(extra[i]);
  return s;
}

/// OpenNLPLab's TNL rule for layer `layer` of `layers` (layers >= 2).
inline std::vector<float> lightning_log_decay_alibi(std::int64_t heads, std::int64_t layer, std::int64_t layers) {
  ATTNKIT_CHECK(heads > 0 && layers > 1 && layer >= 0 && layer < layers,
                "lightning_log_decay_alibi: need heads > 0, layers > 1 and 0 <= layer < layers, got ", heads, ", ",
                layer, ", ", layers);
  const std::vector<double> slopes = alibi_slopes(heads);
  std::vector<float> g(static_cast<std::size_t>(heads));
  for (std::int64_t h = 0; h < heads; ++h)
    g[h] = static_cast<float>(-slopes[h] * (1.0 - static_cast<double>(layer) / (layers - 1) + 1e-5));
  return g;
}

/// Lightning attention: linear attention with log_lambda (h) per head; scale
/// defaults to 1 (unset in params) as in the reference kernels.
template <class TQ, class TK, class TV, class TO, class Backend>
void lightning_attention(tensor_view<TQ, 4> q,  // (b, h, t, K)
                         tensor_view<TK, 4> k,  // (b, h, t, K)
                         tensor_view<TV, 4> v,  // (b, h, t, V)
                         tensor_view<TO, 4> o,  // (b, h, t, V)
                         tensor_view<const float, 1> log_lambda,  // (h)
                         const linear_state& state, linear_params params, const Backend& backend) {
  ATTNKIT_CHECK(!params.normalize, "lightning_attention: Lightning has no normalizer (params.normalize must be off)");
  if (!params.scale) params.scale = 1.0f;
  linear_decay decay;
  decay.per_head = log_lambda;
  linear_attention(q, k, v, o, decay, state, params, backend);
}

ATTNKIT_END_NAMESPACE
