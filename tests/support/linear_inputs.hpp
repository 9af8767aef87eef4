// Random inputs for linear-attention tests: q, k, v and log gates of every grain.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>

#include "attnkit/attention/linear/decay.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/tensor.hpp"

namespace attnkit::test {

enum class grain { none, head, token, channel };

inline const char* name(grain g) {
  switch (g) {
    case grain::none: return "none";
    case grain::head: return "per head";
    case grain::token: return "per token";
    default: return "per channel";
  }
}

/// Random q, k, v and log gates of every grain for one shape.
struct linear_inputs {
  std::int64_t b, h, t, K, V;
  tensor<float, 4> q, k, v;
  tensor<float, 1> g_head;
  tensor<float, 3> g_token;
  tensor<float, 4> g_channel;

  /// Gates are logsigmoid(normal * 2) / strength; positive q and k keep a
  /// normalized output's denominator away from zero.
  linear_inputs(std::int64_t b_, std::int64_t h_, std::int64_t t_, std::int64_t K_, std::int64_t V_,
                std::mt19937_64& rng, bool positive = false, float strength = 4.0f)
      : b(b_), h(h_), t(t_), K(K_), V(V_), q({b, h, t, K}), k({b, h, t, K}), v({b, h, t, V}), g_head({h}),
        g_token({b, h, t}), g_channel({b, h, t, K}) {
    std::normal_distribution<float> n(0.0f, 1.0f);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    for (auto* x : {&q, &k})
      for (std::int64_t i = 0; i < x->size(); ++i) x->data()[i] = positive ? u(rng) : n(rng) / std::sqrt(float(K));
    for (std::int64_t i = 0; i < v.size(); ++i) v.data()[i] = n(rng);
    const auto gate = [&] { return -std::log1p(std::exp(-2.0f * n(rng))) / strength; };
    for (std::int64_t i = 0; i < g_head.size(); ++i) g_head.data()[i] = gate();
    for (std::int64_t i = 0; i < g_token.size(); ++i) g_token.data()[i] = gate();
    for (std::int64_t i = 0; i < g_channel.size(); ++i) g_channel.data()[i] = gate();
  }

  linear_decay decay(grain g) const {
    linear_decay d;
    if (g == grain::head) d.per_head = g_head.cview();
    if (g == grain::token) d.per_token = g_token.cview();
    if (g == grain::channel) d.per_channel = g_channel.cview();
    return d;
  }
};

inline tensor<float, 4> random_state(std::int64_t b, std::int64_t h, std::int64_t K, std::int64_t V, std::mt19937_64& rng) {
  tensor<float, 4> s({b, h, K, V});
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (std::int64_t i = 0; i < s.size(); ++i) s.data()[i] = n(rng);
  return s;
}

/// x rounded to T (half, bfloat16) element by element, for reduced-precision inputs.
template <class T>
tensor<T, 4> rounded(const tensor<float, 4>& x) {
  tensor<T, 4> r({x.extent(0), x.extent(1), x.extent(2), x.extent(3)});
  for (std::int64_t i = 0; i < x.size(); ++i) r.data()[i] = from_float<T>(x.data()[i]);
  return r;
}

}  // namespace attnkit::test
