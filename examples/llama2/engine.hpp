// The forward pass of a Llama-2 model whose attention and KV cache are
// attnkit's. Per layer: RMSNorm, q/k/v projections, RoPE at the positions the
// cache hands out, append k and v to the layer's kv_cache, one cached_attention
// call (flash prefill for a chunk of tokens, flash decode for one), the policy's
// observe and evict, the output projection, then the SwiGLU feed-forward.
// Matrix products use Eigen; everything attention-shaped is attnkit's.
#pragma once

#include <Eigen/Core>
#include <attnkit/attnkit.hpp>

#include <cmath>
#include <functional>
#include <variant>
#include <vector>

#include "model.hpp"
#include "policy.hpp"

namespace llama2 {

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

class engine {
 public:
  /// Called after each layer's attention with that layer's cache and the
  /// call's key weights (hkv, longest head), summed over each GQA group and
  /// over the query rows as the policy weighs them (all rows alike for full).
  using attention_observer = std::function<void(int layer, const kv_cache<float>&, tensor_view<const float, 2>)>;

  engine(const model& m, const policy_spec& spec, attention_observer observer = {})
      : m_(m), observer_(std::move(observer)) {
    check_spec(spec, m.cfg);
    for (int l = 0; l < m.cfg.n_layers; ++l) {
      caches_.emplace_back(cache_options(spec, m.cfg));
      policies_.push_back(make_policy(spec, l, m.cfg.n_kv_heads));
    }
  }

  const config& cfg() const { return m_.cfg; }
  const kv_cache<float>& cache(int layer) const { return caches_[layer]; }
  /// Tokens run so far.
  std::int64_t seen() const { return caches_[0].index().seen(); }

  /// Runs the next tokens of the sequence through the model as one chunk and
  /// returns the logits (vocab) of the last of them.
  const std::vector<float>& forward(const std::vector<int>& tokens) {
    const config& c = m_.cfg;
    const weights& w = m_.w;
    const auto n = static_cast<Eigen::Index>(tokens.size());
    if (n == 0 || seen() + n > c.seq_len)
      throw std::invalid_argument("forward: " + std::to_string(n) + " tokens after " + std::to_string(seen()) +
                                  " exceed the context of " + std::to_string(c.seq_len));
    matrix x(n, c.dim);  // (n, dim) residual stream
    for (Eigen::Index i = 0; i < n; ++i) {
      if (tokens[i] < 0 || tokens[i] >= c.vocab_size) throw std::invalid_argument("forward: token out of range");
      x.row(i) = Eigen::Map<const Eigen::RowVectorXf>(w.token_embedding + std::size_t(tokens[i]) * c.dim, c.dim);
    }
    for (int l = 0; l < c.n_layers; ++l) {
      x += attention(l, rmsnorm(x, w.rms_att + std::size_t(l) * c.dim));
      x += feed_forward(l, rmsnorm(x, w.rms_ffn + std::size_t(l) * c.dim));
    }
    const matrix last = rmsnorm(x.bottomRows(1), w.rms_final);
    logits_.resize(std::size_t(c.vocab_size));
    Eigen::Map<Eigen::VectorXf>(logits_.data(), c.vocab_size).noalias() =
        weight(w.classifier, c.vocab_size, c.dim) * last.row(0).transpose();
    return logits_;
  }

 private:
  static Eigen::Map<const matrix> weight(const float* p, int out, int in) { return {p, out, in}; }

  matrix rmsnorm(const matrix& x, const float* gain) const {
    const Eigen::Map<const Eigen::RowVectorXf> g(gain, x.cols());
    matrix out(x.rows(), x.cols());
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const float inv = 1.0f / std::sqrt(x.row(i).squaredNorm() / static_cast<float>(x.cols()) + 1e-5f);
      out.row(i) = (x.row(i) * inv).cwiseProduct(g);
    }
    return out;
  }

  /// The attention block's output for the chunk xb (n, dim), after its projection.
  matrix attention(int l, const matrix& xb) {
    const config& c = m_.cfg;
    const weights& w = m_.w;
    const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
    const Eigen::Index n = xb.rows();
    const std::size_t at = std::size_t(l) * c.dim;
    matrix q = xb * weight(w.wq + at * c.dim, c.dim, c.dim).transpose();         // (n, hq * hs)
    matrix k = xb * weight(w.wk + at * c.kv_dim(), c.kv_dim(), c.dim).transpose();  // (n, hkv * hs)
    matrix v = xb * weight(w.wv + at * c.kv_dim(), c.kv_dim(), c.dim).transpose();  // (n, hkv * hs)

    kv_cache<float>& cache = caches_[l];
    for (int g = 0; g < c.n_kv_heads; ++g) {
      // The cache says where the chunk's tokens sit: their text positions, or
      // (StreamingLLM) their rows in the cache.
      const std::int64_t first = cache.index().next_position(g);
      for (Eigen::Index i = 0; i < n; ++i) {
        const double pos = static_cast<double>(first + i);
        rope_rotate(&k(i, g * hs), hs, pos, model_rope());
        for (int h = g * group; h < (g + 1) * group; ++h) rope_rotate(&q(i, h * hs), hs, pos, model_rope());
      }
    }
    const tensor_view<const float, 3> k_new(k.data(), {c.n_kv_heads, n, hs}, {hs, c.kv_dim(), 1});  // (hkv, n, hs)
    const tensor_view<const float, 3> v_new(v.data(), {c.n_kv_heads, n, hs}, {hs, c.kv_dim(), 1});  // (hkv, n, hs)
    cache.append(k_new, v_new);

    matrix o(n, c.dim);
    const auto q_view = make_bshd<const float>(q.data(), 1, n, c.n_heads, hs);  // (1, hq, n, hs)
    const auto o_view = make_bshd(o.data(), 1, n, c.n_heads, hs);              // (1, hq, n, hs)
    std::visit([&](auto& policy) { attend(l, q_view, o_view, policy); }, policies_[l]);
    return o * weight(w.wo + at * c.dim, c.dim, c.dim).transpose();
  }

  /// One flash call over the layer's cache (key weights when the policy or the
  /// observer wants them), then the policy's observe and eviction step.
  template <class Policy>
  void attend(int l, tensor_view<const float, 4> q, tensor_view<float, 4> o, Policy& policy) {
    kv_cache<float>& cache = caches_[l];
    const std::int64_t n = q.extent(2), hkv = cache.heads(), longest = cache.index().max_length();
    attention_params params;
    params.causal = true;  // bottom-right aligned: the chunk is the cache's tail
    const bool weigh = Policy::wants_weights || observer_;
    const std::vector<float> rows = row_weights(policy, n);
    key_weights kw;
    if (weigh) {
      key_weights_.resize(std::size_t(hkv * longest));
      kw.out = tensor_view<float, 3>(key_weights_.data(), {1, hkv, longest});
      if (!rows.empty()) kw.row_weights = tensor_view<const float, 1>(rows.data(), {n});
    }
    cpu_native backend{executor::serial(), {}};  // a model this small runs best on one thread
    scratch_.resize(cached_attention_workspace_size(q, cache, o, {}, kw, backend));
    backend.scratch = {scratch_.data(), scratch_.size()};
    cached_attention(q, cache, o, params, {}, kw, backend);

    const tensor_view<const float, 2> per_key(key_weights_.data(), {hkv, weigh ? longest : 0});  // (hkv, longest)
    if (observer_) observer_(l, cache, per_key);
    if (Policy::wants_weights) policy.observe(cache.index(), per_key, n);
    evict(cache, policy);
  }

  matrix feed_forward(int l, const matrix& xb) const {
    const config& c = m_.cfg;
    const weights& w = m_.w;
    const std::size_t at = std::size_t(l) * c.dim * c.hidden_dim;
    const matrix gate = xb * weight(w.w1 + at, c.hidden_dim, c.dim).transpose();  // (n, hidden)
    const matrix up = xb * weight(w.w3 + at, c.hidden_dim, c.dim).transpose();    // (n, hidden)
    const matrix h = (gate.array() / (1.0f + (-gate.array()).exp())).cwiseProduct(up.array()).matrix();  // silu(gate) * up
    return h * weight(w.w2 + at, c.dim, c.hidden_dim).transpose();
  }

  const model& m_;
  attention_observer observer_;
  std::vector<kv_cache<float>> caches_;
  std::vector<layer_policy> policies_;
  std::vector<float> key_weights_, logits_;
  std::vector<unsigned char> scratch_;
};

}  // namespace llama2
