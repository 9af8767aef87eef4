// The forward pass of a Llama-2 model whose attention and KV cache are
// attnkit's, for one sequence or a batch of them served together. Per layer:
// RMSNorm, q/k/v projections, RoPE at the positions the cache hands out
// (rope_table), append k and v to each sequence's cache in one kv_pool (f32,
// or int8 / fp8 quantized on append: policy_spec::kv), one attention call
// (pool_attention_args) for every sequence of the step (prefill chunks and
// decode rows mixed), each sequence's policy observe and evict, the output
// projection, then the SwiGLU feed-forward. Matrix products run per sequence
// (the same shapes as alone, so a sequence's logits do not depend on the batch);
// they use Eigen, and everything attention-shaped is attnkit's. With
// policy_spec::sparse, each decode step's call runs a HiP or Quest layout
// (attention/sparse/) over the full cache.
#pragma once

#include <Eigen/Core>
#include <attnkit/attnkit.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "model.hpp"
#include "policy.hpp"

namespace llama2 {

using matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

class engine {
 public:
  /// Called after each layer's attention with the layer's token index (of
  /// sequence 0) and the call's key weights (hkv, >= longest head), summed over
  /// each GQA group and over the query rows as the policy weighs them.
  using attention_observer = std::function<void(int layer, const token_index&, tensor_view<const float, 2>)>;

  engine(const model& m, const policy_spec& spec, attention_observer observer = {}, std::int64_t sequences = 1)
      : m_(m), observer_(std::move(observer)), pool_((check_spec(spec, m.cfg), make_pool(spec, m.cfg, sequences))),
        rope_(m.cfg.seq_len, m.cfg.head_size(), model_rope()),
        sparse_(spec.sparse),
        budget_(spec.budget) {
    for (std::int64_t s = 0; s < sequences; ++s) {
      ids_.push_back(std::visit([](auto& p) { return p.add_sequence(); }, pool_));
      policies_.emplace_back();
      quest_.emplace_back();
      for (int l = 0; l < m.cfg.n_layers; ++l) {
        policies_.back().push_back(make_policy(spec, l, m.cfg.n_kv_heads));
        if (sparse_ == "quest") quest_.back().emplace_back(1, m.cfg.n_kv_heads, m.cfg.seq_len, m.cfg.head_size(), sparse_block);
      }
    }
    logits_.resize(static_cast<std::size_t>(sequences));
  }

  const config& cfg() const { return m_.cfg; }
  std::int64_t sequences() const { return static_cast<std::int64_t>(ids_.size()); }
  /// What sequence s caches at `layer`.
  const token_index& index(int layer, std::int64_t s = 0) const {
    return std::visit([&](const auto& p) -> const token_index& { return p.index(ids_[s], layer); }, pool_);
  }
  /// The largest |k| and |v| sequence 0 holds, per (layer, KV head), layer-major:
  /// what fp8 scales are calibrated from (an f32 cache; others read as 0).
  std::pair<std::vector<float>, std::vector<float>> kv_absmax() const {
    const config& c = m_.cfg;
    std::vector<float> k(std::size_t(c.n_layers * c.n_kv_heads)), v(k.size());
    if (const auto* p = std::get_if<kv_pool<float>>(&pool_))
      for (int l = 0; l < c.n_layers; ++l)
        for (int h = 0; h < c.n_kv_heads; ++h)
          for (std::int64_t j = 0; j < index(l).length(h); ++j)
            for (int x = 0; x < c.head_size(); ++x) {
              k[l * c.n_kv_heads + h] = std::max(k[l * c.n_kv_heads + h], std::abs(p->key_row(ids_[0], l, h, j)[x]));
              v[l * c.n_kv_heads + h] = std::max(v[l * c.n_kv_heads + h], std::abs(p->value_row(ids_[0], l, h, j)[x]));
            }
    return {k, v};
  }

  /// Tokens sequence s has run so far.
  std::int64_t seen(std::int64_t s = 0) const { return index(0, s).seen(); }

  /// Runs the next tokens of the (only) sequence as one chunk; returns the logits (vocab) of the last.
  const std::vector<float>& forward(const std::vector<int>& tokens) {
    if (tokens.empty()) throw std::invalid_argument("forward: no tokens");
    return forward_batch({tokens})[0];
  }

  /// Runs chunks[s] through sequence s, all in one step (an empty chunk sits the
  /// step out); returns each sequence's logits of its chunk's last token.
  const std::vector<std::vector<float>>& forward_batch(const std::vector<std::vector<int>>& chunks) {
    const config& c = m_.cfg;
    const weights& w = m_.w;
    if (static_cast<std::int64_t>(chunks.size()) != sequences())
      throw std::invalid_argument("forward: " + std::to_string(chunks.size()) + " chunks for " +
                                  std::to_string(sequences()) + " sequences");
    std::vector<matrix> x(chunks.size());  // per sequence: (n, dim) residual stream
    for (std::size_t s = 0; s < chunks.size(); ++s) {
      const auto n = static_cast<Eigen::Index>(chunks[s].size());
      if (seen(s) + n > c.seq_len)
        throw std::invalid_argument("forward: " + std::to_string(n) + " tokens after " + std::to_string(seen(s)) +
                                    " exceed the context of " + std::to_string(c.seq_len));
      x[s].resize(n, c.dim);
      for (Eigen::Index i = 0; i < n; ++i) {
        const int t = chunks[s][i];
        if (t < 0 || t >= c.vocab_size) throw std::invalid_argument("forward: token out of range");
        x[s].row(i) = Eigen::Map<const Eigen::RowVectorXf>(w.token_embedding + std::size_t(t) * c.dim, c.dim);
      }
    }
    for (int l = 0; l < c.n_layers; ++l) {
      attention(l, x);
      for (matrix& xs : x)
        if (xs.rows() > 0) xs += feed_forward(l, rmsnorm(xs, w.rms_ffn + std::size_t(l) * c.dim));
    }
    for (std::size_t s = 0; s < x.size(); ++s) {
      if (x[s].rows() == 0) continue;
      const matrix last = rmsnorm(x[s].bottomRows(1), w.rms_final);
      logits_[s].resize(std::size_t(c.vocab_size));
      Eigen::Map<Eigen::VectorXf>(logits_[s].data(), c.vocab_size).noalias() =
          weight(w.classifier, c.vocab_size, c.dim) * last.row(0).transpose();
    }
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

  /// Rotates q (n, hq * hs) and k (n, hkv * hs) of sequence s at the positions its cache hands out:
  /// text positions, or (StreamingLLM) rows in the cache.
  void rotate(int l, std::int64_t s, matrix& q, matrix& k) {
    const config& c = m_.cfg;
    const int hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
    const std::int64_t n = q.rows();
    positions_.resize(std::size_t(c.n_heads * n));
    for (int h = 0; h < c.n_heads; ++h)
      for (std::int64_t i = 0; i < n; ++i) positions_[h * n + i] = index(l, s).next_position(h / group) + i;
    rope_.apply(make_bshd(q.data(), 1, n, c.n_heads, hs), tensor_view<const std::int64_t, 3>(positions_.data(), {1, c.n_heads, n}));
    // KV head g takes query head g * group's positions.
    rope_.apply(make_bshd(k.data(), 1, n, c.n_kv_heads, hs),
                tensor_view<const std::int64_t, 3>(positions_.data(), {1, c.n_kv_heads, n}, {0, group * n, 1}));
  }

  /// Adds each sequence's attention block output (after its projection) to x[s].
  void attention(int l, std::vector<matrix>& x) {
    const config& c = m_.cfg;
    const weights& w = m_.w;
    const int hs = c.head_size();
    const std::size_t at = std::size_t(l) * c.dim;
    std::vector<std::int64_t> active;
    std::vector<std::int64_t> cu = {0}, which;
    for (std::int64_t s = 0; s < sequences(); ++s)
      if (x[s].rows() > 0) active.push_back(ids_[s]), which.push_back(s), cu.push_back(cu.back() + x[s].rows());
    matrix q_all(cu.back(), c.dim), o_all(cu.back(), c.dim);  // (total, hq * hs): every sequence's rows, packed
    for (std::size_t a = 0; a < which.size(); ++a) {
      const std::int64_t s = which[a];
      const matrix xb = rmsnorm(x[s], w.rms_att + at);
      matrix q = xb * weight(w.wq + at * c.dim, c.dim, c.dim).transpose();         // (n, hq * hs)
      matrix k = xb * weight(w.wk + at * c.kv_dim(), c.kv_dim(), c.dim).transpose();  // (n, hkv * hs)
      const matrix v = xb * weight(w.wv + at * c.kv_dim(), c.kv_dim(), c.dim).transpose();  // (n, hkv * hs)
      rotate(l, s, q, k);
      const std::int64_t n = xb.rows();
      std::visit(
          [&](auto& p) {
            p.append(ids_[s], l, tensor_view<const float, 3>(k.data(), {c.n_kv_heads, n, hs}, {hs, c.kv_dim(), 1}),
                     tensor_view<const float, 3>(v.data(), {c.n_kv_heads, n, hs}, {hs, c.kv_dim(), 1}));
          },
          pool_);
      if (sparse_ == "quest")  // each key into its page's bounds, as it is appended
        for (int g = 0; g < c.n_kv_heads; ++g)
          for (std::int64_t i = 0; i < n; ++i)
            quest_[s][l].add(0, g, index(l, s).length(g) - n + i, k.data() + i * c.kv_dim() + g * hs);
      q_all.middleRows(cu[a], n) = q;
    }
    std::visit([&](auto& pool, auto& first) { attend(pool, l, active, which, cu, q_all, o_all, first); }, pool_,
               policies_[0][l]);
    for (std::size_t a = 0; a < which.size(); ++a) {
      const matrix o = o_all.middleRows(cu[a], cu[a + 1] - cu[a]);
      x[which[a]] += o * weight(w.wo + at * c.dim, c.dim, c.dim).transpose();
    }
  }

  /// One attention call over the step's sequences (key weights when the
  /// policy or the observer wants them), then each sequence's policy observes and evicts.
  template <class Pool, class Policy>
  void attend(Pool& pool, int l, const std::vector<std::int64_t>& active, const std::vector<std::int64_t>& which,
              const std::vector<std::int64_t>& cu, const matrix& q_all, matrix& o_all, const Policy&) {
    const config& c = m_.cfg;
    const std::int64_t total = cu.back(), count = static_cast<std::int64_t>(active.size()), hkv = c.n_kv_heads;
    attention_params params;
    params.causal = true;  // bottom-right aligned: each chunk is its cache's tail
    const bool weigh = Policy::wants_weights || observer_;
    key_weights kw;
    std::vector<float> rows;
    if (weigh) {  // sized to the context: reused, never rebuilt to the longest head
      key_weights_.resize(std::size_t(hkv * count * c.seq_len));
      kw.out = tensor_view<float, 3>(key_weights_.data(), {hkv, count, c.seq_len});
      for (std::size_t a = 0; a < which.size(); ++a) {
        const std::vector<float> r = row_weights(std::get<Policy>(policies_[which[a]][l]), cu[a + 1] - cu[a]);
        if (r.empty()) rows.insert(rows.end(), std::size_t(cu[a + 1] - cu[a]), 1.0f);
        rows.insert(rows.end(), r.begin(), r.end());
      }
      kw.row_weights = tensor_view<const float, 1>(rows.data(), {total});
    }
    pool.gather(l, active, batch_);
    const auto q = make_bshd<const float>(q_all.data(), 1, total, c.n_heads, c.head_size());  // (1, hq, total, hs)
    const auto o = make_bshd(o_all.data(), 1, total, c.n_heads, c.head_size());             // (1, hq, total, hs)
    const tensor_view<const std::int64_t, 1> cu_view(cu.data(), {count + 1});
    auto args = pool_attention_args(q, pool, batch_, cu_view, o, {}, kw);
    args.params = params;
    const owned_layout layout = select_rows(args, l, which, total == count);
    if (layout.b > 0) args.sparse = layout.view();
    cpu_native backend{executor::serial(), {}};  // a model this small runs best on one thread
    scratch_.resize(flash_attention_workspace_size(args, backend));
    backend.scratch = {scratch_.data(), scratch_.size()};
    flash_attention(args, backend);

    for (std::size_t a = 0; a < which.size(); ++a) {
      Policy& policy = std::get<Policy>(policies_[which[a]][l]);
      const tensor_view<const float, 2> per_key =
          weigh ? sequence_key_weights(tensor_view<const float, 3>(kw.out), static_cast<std::int64_t>(a))
                : tensor_view<const float, 2>(nullptr, {hkv, 0});  // (hkv, context)
      if (observer_ && which[a] == 0) observer_(l, index(l, 0), per_key);
      if (Policy::wants_weights) policy.observe(index(l, which[a]), per_key, cu[a + 1] - cu[a]);
      evict(pool, active[a], l, policy);
    }
  }

  /// The layout of a decode step's call under policy_spec::sparse (none otherwise):
  /// its sequences are (KV head, sequence) pairs, as pool_attention_args makes them.
  template <class Args>
  owned_layout select_rows(const Args& args, int l, const std::vector<std::int64_t>& which, bool decode) const {
    if (sparse_.empty() || !decode) return {};
    if (sparse_ == "hip") return hip_layout(args, hip_for(budget_), cpu_native{executor::serial(), {}});
    const config& c = m_.cfg;
    const std::int64_t n = static_cast<std::int64_t>(which.size());
    quest_bounds step(c.n_kv_heads * n, 1, c.seq_len, c.head_size(), sparse_block);
    for (int g = 0; g < c.n_kv_heads; ++g)
      for (std::int64_t a = 0; a < n; ++a) {
        const quest_bounds& own = quest_[static_cast<std::size_t>(which[a])][static_cast<std::size_t>(l)];
        std::copy_n(&own.min(0, g, 0, 0), own.pages() * c.head_size(), &step.min(g * n + a, 0, 0, 0));
        std::copy_n(&own.max(0, g, 0, 0), own.pages() * c.head_size(), &step.max(g * n + a, 0, 0, 0));
      }
    quest_options opt;
    opt.budget = budget_;
    return quest_layout(args, step, opt, executor::serial());
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
  any_pool pool_;  // every sequence's cache at every layer
  rope_table rope_;
  std::vector<std::int64_t> ids_;
  std::vector<std::vector<layer_policy>> policies_;  // per sequence, per layer
  std::vector<std::vector<float>> logits_;
  std::vector<float> key_weights_;
  std::vector<std::int64_t> positions_;
  kv_batch batch_;
  std::vector<unsigned char> scratch_;
  std::string sparse_;  // policy_spec::sparse
  std::int64_t budget_;
  std::vector<std::vector<quest_bounds>> quest_;  // quest: per sequence, per layer, (1, hkv, pages, hs)
};

}  // namespace llama2
