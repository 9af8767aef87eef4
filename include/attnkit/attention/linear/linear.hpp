// Causal linear attention with decay, the one recurrence behind Lightning,
// RetNet, Mamba2-style, GLA and BASED (see decay.hpp):
//   S_t = diag(a_t) S_{t-1} + k_t v_tᵀ          (K, V) state, fp32
//   o_t = scale · S_tᵀ q_t
// and, with normalize, a running key sum z_t = diag(a_t) z_{t-1} + k_t that
// divides the output: o_t = scale · S_tᵀ q_t / (scale · z_tᵀ q_t + eps).
//
// Three forms compute it and agree (this file: the reference backend):
//   parallel    o_t = scale Σ_{s<=t} (Σ_x q_tx k_sx e^{G(s,t,x)}) v_s, G(s,t,x) = Σ_{s<u<=t} g_ux;
//               quadratic, no state, for tests
//   chunkwise   per chunk of C rows: the state carried in (decayed to each row) plus
//               the masked product within the chunk, then the state carried out; prefill
//   recurrent   one token at a time; decode
// The state is explicit: `state` is read as the initial state and overwritten
// with the final one, so prefill, chunked prefill and decode steps compose.
// Decay sums are taken over segments, never as differences of long cumulative
// sums, so every exponent is <= 0 and g = -inf (a reset) gives exact zeros.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "attnkit/attention/linear/decay.hpp"
#include "attnkit/attention/linear/linear_params.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"

#if ATTNKIT_HAS_XSIMD
#include "attnkit/attention/linear/linear_cpu.hpp"
#endif

ATTNKIT_BEGIN_NAMESPACE

namespace detail {

/// One head's state as plain vectors: s (K, V) row-major and z (K).
struct head_state {
  std::vector<float> s, z;

  head_state(const linear_shape& sh) : s(static_cast<std::size_t>(sh.K * sh.V)), z(static_cast<std::size_t>(sh.K)) {}

  void load(const linear_state& st, std::int64_t b, std::int64_t h) {
    const std::int64_t K = static_cast<std::int64_t>(z.size()), V = static_cast<std::int64_t>(s.size()) / (K ? K : 1);
    for (std::int64_t x = 0; x < K; ++x) {
      z[x] = is_given(st.z) ? st.z(b, h, x) : 0.0f;
      for (std::int64_t y = 0; y < V; ++y) s[x * V + y] = is_given(st.s) ? st.s(b, h, x, y) : 0.0f;
    }
  }

  void store(const linear_state& st, std::int64_t b, std::int64_t h) const {
    if (!is_given(st.s)) return;
    const std::int64_t K = static_cast<std::int64_t>(z.size()), V = static_cast<std::int64_t>(s.size()) / (K ? K : 1);
    for (std::int64_t x = 0; x < K; ++x) {
      if (is_given(st.z)) st.z(b, h, x) = z[x];
      for (std::int64_t y = 0; y < V; ++y) st.s(b, h, x, y) = s[x * V + y];
    }
  }
};

/// Writes o_t from the accumulated numerator (V) and normalizer.
template <class TO>
void write_linear_row(const tensor_view<TO, 4>& o, std::int64_t b, std::int64_t h, std::int64_t t,
                      const std::vector<float>& num, float den, const linear_shape& sh, const linear_params& p) {
  const float div = p.normalize ? sh.scale * den + p.eps : 1.0f;
  for (std::int64_t y = 0; y < sh.V; ++y) o(b, h, t, y) = from_float<TO>(sh.scale * num[y] / div);
}

/// body(b, h, st) for every head, with st holding that head's state: loaded from
/// `state` (or zero) before, stored back after.
template <class Body>
void for_each_head(const linear_shape& sh, const linear_state& state, Body&& body) {
  head_state st(sh);
  for (std::int64_t b = 0; b < sh.b; ++b)
    for (std::int64_t h = 0; h < sh.h; ++h) {
      st.load(state, b, h);
      body(b, h, st);
      st.store(state, b, h);
    }
}

}  // namespace detail

/// The recurrent form: one token at a time (decode, or any t).
template <class TQ, class TK, class TV, class TO>
void linear_attention_recurrent(tensor_view<TQ, 4> q,  // (b, h, t, K)
                                tensor_view<TK, 4> k,  // (b, h, t, K)
                                tensor_view<TV, 4> v,  // (b, h, t, V)
                                tensor_view<TO, 4> o,  // (b, h, t, V)
                                const linear_decay& decay, const linear_state& state, const linear_params& params,
                                reference) {
  const linear_shape sh = detail::check_linear_call("linear_attention", q, k, v, o, decay, state, params);
  std::vector<float> num(static_cast<std::size_t>(sh.V));
  detail::for_each_head(sh, state, [&](std::int64_t b, std::int64_t h, detail::head_state& st) {
    for (std::int64_t t = 0; t < sh.t; ++t) {
      std::fill(num.begin(), num.end(), 0.0f);
      float den = 0.0f;
      for (std::int64_t x = 0; x < sh.K; ++x) {
        const float a = std::exp(decay(b, h, t, x)), kx = to_float(k(b, h, t, x)), qx = to_float(q(b, h, t, x));
        float* row = st.s.data() + x * sh.V;
        for (std::int64_t y = 0; y < sh.V; ++y) {
          row[y] = a * row[y] + kx * to_float(v(b, h, t, y));
          num[y] += qx * row[y];
        }
        st.z[x] = a * st.z[x] + kx;
        den += qx * st.z[x];
      }
      detail::write_linear_row(o, b, h, t, num, den, sh, params);
    }
  });
}

/// The parallel (quadratic) form, from a zero state; the definition, for tests.
template <class TQ, class TK, class TV, class TO>
void linear_attention_parallel(tensor_view<TQ, 4> q,  // (b, h, t, K)
                               tensor_view<TK, 4> k,  // (b, h, t, K)
                               tensor_view<TV, 4> v,  // (b, h, t, V)
                               tensor_view<TO, 4> o,  // (b, h, t, V)
                               const linear_decay& decay, const linear_params& params, reference) {
  const linear_shape sh = detail::check_linear_call("linear_attention_parallel", q, k, v, o, decay, {}, params);
  std::vector<float> num(static_cast<std::size_t>(sh.V)), seg(static_cast<std::size_t>(sh.K));
  for (std::int64_t b = 0; b < sh.b; ++b)
    for (std::int64_t h = 0; h < sh.h; ++h)
      for (std::int64_t t = 0; t < sh.t; ++t) {
        std::fill(num.begin(), num.end(), 0.0f);
        std::fill(seg.begin(), seg.end(), 0.0f);  // G(s, t, x), grown as s walks back from t
        float den = 0.0f;
        for (std::int64_t s = t; s >= 0; --s) {
          if (s < t)
            for (std::int64_t x = 0; x < sh.K; ++x) seg[x] += decay(b, h, s + 1, x);
          float a = 0.0f;
          for (std::int64_t x = 0; x < sh.K; ++x)
            a += to_float(q(b, h, t, x)) * to_float(k(b, h, s, x)) * std::exp(seg[x]);
          for (std::int64_t y = 0; y < sh.V; ++y) num[y] += a * to_float(v(b, h, s, y));
          den += a;
        }
        detail::write_linear_row(o, b, h, t, num, den, sh, params);
      }
}

/// The chunkwise form (prefill): per chunk of params.chunk rows, the inter-chunk
/// part reads the state carried in, the intra-chunk part is the masked product
/// within the chunk, and the state is then carried past the chunk.
template <class TQ, class TK, class TV, class TO>
void linear_attention_chunkwise(tensor_view<TQ, 4> q,  // (b, h, t, K)
                                tensor_view<TK, 4> k,  // (b, h, t, K)
                                tensor_view<TV, 4> v,  // (b, h, t, V)
                                tensor_view<TO, 4> o,  // (b, h, t, V)
                                const linear_decay& decay, const linear_state& state, const linear_params& params,
                                reference) {
  const linear_shape sh = detail::check_linear_call("linear_attention", q, k, v, o, decay, state, params);
  const std::int64_t C = std::min(params.chunk, sh.t);  // one chunk covers a shorter input
  std::vector<float> num(static_cast<std::size_t>(sh.V)), seg(static_cast<std::size_t>(sh.K));
  std::vector<float> into(static_cast<std::size_t>(C * sh.K));  // (C, K): Σ g from the chunk start to row r
  std::vector<float> past(static_cast<std::size_t>(C * sh.K));  // (C, K): Σ g after row r to the chunk end
  detail::for_each_head(sh, state, [&](std::int64_t b, std::int64_t h, detail::head_state& st) {
    for (std::int64_t t0 = 0; t0 < sh.t; t0 += C) {
      const std::int64_t n = std::min(C, sh.t - t0);
      for (std::int64_t x = 0; x < sh.K; ++x) {
        for (std::int64_t r = 0; r < n; ++r) into[r * sh.K + x] = (r ? into[(r - 1) * sh.K + x] : 0.0f) + decay(b, h, t0 + r, x);
        for (std::int64_t r = n - 1; r >= 0; --r)
          past[r * sh.K + x] = r == n - 1 ? 0.0f : past[(r + 1) * sh.K + x] + decay(b, h, t0 + r + 1, x);
      }
      for (std::int64_t r = 0; r < n; ++r) {
        std::fill(num.begin(), num.end(), 0.0f);
        float den = 0.0f;
        for (std::int64_t x = 0; x < sh.K; ++x) {  // inter: the state carried in, decayed to row r
          const float qx = to_float(q(b, h, t0 + r, x)) * std::exp(into[r * sh.K + x]);
          for (std::int64_t y = 0; y < sh.V; ++y) num[y] += qx * st.s[x * sh.V + y];
          den += qx * st.z[x];
        }
        std::fill(seg.begin(), seg.end(), 0.0f);
        for (std::int64_t s = r; s >= 0; --s) {  // intra: rows s <= r of this chunk
          if (s < r)
            for (std::int64_t x = 0; x < sh.K; ++x) seg[x] += decay(b, h, t0 + s + 1, x);
          float a = 0.0f;
          for (std::int64_t x = 0; x < sh.K; ++x)
            a += to_float(q(b, h, t0 + r, x)) * to_float(k(b, h, t0 + s, x)) * std::exp(seg[x]);
          for (std::int64_t y = 0; y < sh.V; ++y) num[y] += a * to_float(v(b, h, t0 + s, y));
          den += a;
        }
        detail::write_linear_row(o, b, h, t0 + r, num, den, sh, params);
      }
      for (std::int64_t x = 0; x < sh.K; ++x) {  // carry the state past the chunk
        const float keep = std::exp(into[(n - 1) * sh.K + x]);
        float* row = st.s.data() + x * sh.V;
        for (std::int64_t y = 0; y < sh.V; ++y) row[y] *= keep;
        st.z[x] *= keep;
        for (std::int64_t s = 0; s < n; ++s) {
          const float kx = to_float(k(b, h, t0 + s, x)) * std::exp(past[s * sh.K + x]);
          for (std::int64_t y = 0; y < sh.V; ++y) row[y] += kx * to_float(v(b, h, t0 + s, y));
          st.z[x] += kx;
        }
      }
    }
  });
}

/// Linear attention with the reference backend: chunkwise for a prefill, recurrent for one token.
template <class TQ, class TK, class TV, class TO>
void linear_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                      const linear_decay& decay, const linear_state& state, const linear_params& params,
                      reference r) {
  if (q.extent(2) == 1)
    linear_attention_recurrent(q, k, v, o, decay, state, params, r);
  else
    linear_attention_chunkwise(q, k, v, o, decay, state, params, r);
}

/// Linear attention with the best backend compiled in.
template <class TQ, class TK, class TV, class TO>
void linear_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                      const linear_decay& decay = {}, const linear_state& state = {},
                      const linear_params& params = {}) {
#if ATTNKIT_HAS_XSIMD
  linear_attention(q, k, v, o, decay, state, params, cpu_native{});
#else
  linear_attention(q, k, v, o, decay, state, params, reference{});
#endif
}

ATTNKIT_END_NAMESPACE
