// Routing attention (content-based clustering of queries and keys):
//
//   Each query head h keeps `clusters` unit centroids mu_c (online spherical
//   k-means: vectors normalized, each joins its nearest centroid, a centroid
//   moves to decay * mu + (1 - decay) * the normalized sum of its members and
//   is normalized again; a centroid without members stays). Routing is
//   balanced: cluster c takes the `window` queries and the `window` keys whose
//   normalized vectors score highest against mu_c (ties to the lower index),
//   sorted by position. Each cluster is an attention of its queries over its
//   keys, causal by the original positions; a query in several clusters gets
//   the lse merge of its clusters' results (merge_states), a query in none
//   gets o = 0 and lse = -inf.
//
// The clusters of a head run as one flash_attention call: cluster-major
// gathered queries and keys are a batch of `clusters` sequences, and
// causality by original position is their bitmask (custom_mask), since
// gathered rows no longer sit at consecutive positions. Cost per head:
// O(n * clusters * d) to route plus O(n * window * d) to attend, which is
// O(n^1.5 d) at clusters = window = sqrt(n).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/check_args.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/sparse/dots.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/softmax_state.hpp"
#include "attnkit/core/tensor.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// Unit centroids per query head, (heads, clusters, d), and their online update.
struct routing_centroids {
  tensor<float, 3> mu;

  routing_centroids(std::int64_t heads, std::int64_t clusters, std::int64_t d) : mu({heads, clusters, d}, 0.0f) {
    ATTNKIT_CHECK(heads >= 1 && clusters >= 1 && d >= 1, "routing_centroids: heads, clusters and d must be >= 1, got ",
                  heads, ", ", clusters, ", ", d);
  }
  std::int64_t heads() const { return mu.extent(0); }
  std::int64_t clusters() const { return mu.extent(1); }
  std::int64_t dim() const { return mu.extent(2); }

  /// Centroid c of head h = x / |x| (x: d values, not all 0), e.g. a sample of the vectors to route.
  template <class T>
  void set(std::int64_t h, std::int64_t c, const T* x) {
    double norm = 0;
    for (std::int64_t y = 0; y < dim(); ++y) norm += static_cast<double>(to_float(x[y])) * to_float(x[y]);
    ATTNKIT_CHECK(norm > 0 && std::isfinite(norm), "routing_centroids::set: the vector must be finite and non-zero");
    for (std::int64_t y = 0; y < dim(); ++y) mu(h, c, y) = static_cast<float>(to_float(x[y]) / std::sqrt(norm));
  }

  /// The centroid of head h nearest to x (the largest dot product with x; ties to the lower index).
  template <class T>
  std::int64_t nearest(std::int64_t h, const T* x) const {
    std::int64_t best = 0;
    float best_dot = -std::numeric_limits<float>::infinity();
    for (std::int64_t c = 0; c < clusters(); ++c) {
      float dot = 0;
      for (std::int64_t y = 0; y < dim(); ++y) dot += mu(h, c, y) * to_float(x[y]);
      if (dot > best_dot) best_dot = dot, best = c;
    }
    return best;
  }

  /// One online k-means step for head h over the n vectors x (n, d): each joins
  /// its nearest centroid, which moves to normalize(decay * mu + (1 - decay) *
  /// normalize(sum of its members' unit vectors)); a centroid without members stays.
  template <class T>
  void update(std::int64_t h, tensor_view<T, 2> x, float decay = 0.999f) {
    ATTNKIT_CHECK(x.extent(1) == dim(), "routing_centroids::update: x.extent(1) must equal d = ", dim(), ", got ",
                  x.extent(1));
    ATTNKIT_CHECK(decay >= 0.0f && decay <= 1.0f, "routing_centroids::update: decay must be in [0, 1], got ", decay);
    std::vector<double> sum(static_cast<std::size_t>(clusters() * dim()), 0.0);
    std::vector<std::int64_t> members(static_cast<std::size_t>(clusters()), 0);
    for (std::int64_t i = 0; i < x.extent(0); ++i) {
      double norm = 0;
      for (std::int64_t y = 0; y < dim(); ++y) norm += static_cast<double>(to_float(x(i, y))) * to_float(x(i, y));
      if (!(norm > 0) || !std::isfinite(norm)) continue;  // a zero or non-finite vector has no direction
      const std::int64_t c = nearest(h, &x(i, 0));
      ++members[static_cast<std::size_t>(c)];
      for (std::int64_t y = 0; y < dim(); ++y) sum[static_cast<std::size_t>(c * dim() + y)] += to_float(x(i, y)) / std::sqrt(norm);
    }
    for (std::int64_t c = 0; c < clusters(); ++c) {
      if (members[static_cast<std::size_t>(c)] == 0) continue;
      const double* s = &sum[static_cast<std::size_t>(c * dim())];
      double sn = 0, mn = 0;
      for (std::int64_t y = 0; y < dim(); ++y) sn += s[y] * s[y];
      if (!(sn > 0)) continue;  // members that cancel out: no direction to move to
      std::vector<double> next(static_cast<std::size_t>(dim()));
      for (std::int64_t y = 0; y < dim(); ++y) {
        next[static_cast<std::size_t>(y)] = decay * mu(h, c, y) + (1.0 - decay) * s[y] / std::sqrt(sn);
        mn += next[static_cast<std::size_t>(y)] * next[static_cast<std::size_t>(y)];
      }
      if (!(mn > 0)) continue;
      for (std::int64_t y = 0; y < dim(); ++y) mu(h, c, y) = static_cast<float>(next[static_cast<std::size_t>(y)] / std::sqrt(mn));
    }
  }
};

/// Balanced routing: the members of every cluster.
struct routing_options {
  std::int64_t window = 0;  // queries and keys per cluster; 0: ceil(n / clusters) of the longer side
};

namespace detail {

/// For each centroid c of head h, the w of the n vectors row(i) (d values each)
/// whose unit vectors score highest against it (ties to the lower index; a zero
/// vector scores below every other), ascending: out[c]. The scores of all
/// vectors against all centroids are one product on `backend`.
template <class Row, class Backend>
void top_members(std::int64_t n, std::int64_t d, const Row& row, const routing_centroids& mu, std::int64_t h,
                 std::int64_t w, const Backend& backend, std::vector<std::vector<std::int64_t>>& out) {
  constexpr std::int64_t piece = 256;  // vectors (or clusters, / 16) per work item
  const executor exec = executor_of(backend);
  const std::int64_t nc = mu.clusters(), ld = (std::max<std::int64_t>(n, 1) + 15) / 16 * 16;
  tensor<float, 2> unit_t({d, ld}, 0.0f), scores({nc, ld});  // unit vectors as columns; (clusters, vectors)
  std::vector<char> zero(static_cast<std::size_t>(n), 0);
  parallel_for(exec, (n + piece - 1) / piece, [&](std::int64_t p) {
    for (std::int64_t i = p * piece; i < std::min(n, (p + 1) * piece); ++i) {
      const auto* r = row(i);
      double norm = 0;
      for (std::int64_t y = 0; y < d; ++y) norm += static_cast<double>(to_float(r[y])) * to_float(r[y]);
      zero[static_cast<std::size_t>(i)] = !(norm > 0);
      if (norm > 0)
        for (std::int64_t y = 0; y < d; ++y) unit_t(y, i) = static_cast<float>(to_float(r[y]) / std::sqrt(norm));
    }
  });
  parallel_for(exec, (nc + 15) / 16, [&](std::int64_t p) {
    const std::int64_t c0 = p * 16, count = std::min<std::int64_t>(16, nc - c0);
    row_dots(backend, &mu.mu(h, c0, 0), unit_t.data(), count, d, ld, &scores(c0, 0));
  });
  out.assign(static_cast<std::size_t>(nc), {});
  const std::int64_t k = std::min(w, n);
  std::vector<std::vector<float>> values(static_cast<std::size_t>(exec.concurrency()));
  parallel_for_slots(exec, k > 0 ? nc : 0, [&](std::int64_t c, std::int64_t slot) {
    float* score = &scores(c, 0);
    for (std::int64_t i = 0; i < n; ++i)
      if (zero[static_cast<std::size_t>(i)]) score[i] = -2.0f;  // below every cosine
    // The k-th best score, then every score above it and the first ties at it.
    std::vector<float>& v = values[static_cast<std::size_t>(slot)];
    v.assign(score, score + n);
    std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
    const float edge = v[static_cast<std::size_t>(k - 1)];
    std::int64_t ties = k - std::count_if(score, score + n, [&](float x) { return x > edge; });
    std::vector<std::int64_t>& members = out[static_cast<std::size_t>(c)];
    members.reserve(static_cast<std::size_t>(k));
    for (std::int64_t i = 0; i < n; ++i)
      if (score[i] > edge || (score[i] == edge && ties-- > 0)) members.push_back(i);
  });
}

inline void check_routing_args(const char* fn, const attention_params& p, bool paged, bool ragged, bool bits,
                               bool sparse, bool weights) {
  ATTNKIT_CHECK(!paged && !ragged && !bits && !sparse && !weights, fn,
                ": takes strided k and v and uniform sequences, without a bitmask, layout or key weights");
  ATTNKIT_CHECK(p.window_left == attention_params::unbounded && p.window_right == attention_params::unbounded &&
                    p.sinks == 0 && p.alibi_slopes.empty() && p.sink_logits.empty(),
                fn, ": windows, sinks, ALiBi and sink logits are not supported (gathered rows lose their neighbours)");
}

}  // namespace detail

/// The members of cluster c of query head h of sequence b: its queries (rows of
/// q) and its keys (rows of k's KV head), each ascending.
struct routing_members {
  std::vector<std::int64_t> queries, keys;
};

/// The routing of head h of sequence b under `centroids` (q: (b, hq, sq, d), k:
/// (b, hkv, skv, d)), scored on `backend`.
template <class TQ, class TK, class Backend = cpu_native>
std::vector<routing_members> route(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, const routing_centroids& centroids,
                                   std::int64_t b, std::int64_t h, const routing_options& opt = {},
                                   const Backend& backend = {}) {
  const std::int64_t sq = q.extent(2), skv = k.extent(2), d = q.extent(3), hk = h / (q.extent(1) / k.extent(1));
  const std::int64_t nc = centroids.clusters();
  const std::int64_t w = opt.window > 0 ? opt.window : (std::max(sq, skv) + nc - 1) / nc;
  std::vector<std::vector<std::int64_t>> queries, keys;
  detail::top_members(sq, d, [&](std::int64_t i) { return &q(b, h, i, 0); }, centroids, h, w, backend, queries);
  detail::top_members(skv, d, [&](std::int64_t j) { return &k(b, hk, j, 0); }, centroids, h, w, backend, keys);
  std::vector<routing_members> out(static_cast<std::size_t>(nc));
  for (std::int64_t c = 0; c < nc; ++c) {
    out[static_cast<std::size_t>(c)].queries = std::move(queries[static_cast<std::size_t>(c)]);
    out[static_cast<std::size_t>(c)].keys = std::move(keys[static_cast<std::size_t>(c)]);
  }
  return out;
}

/// o (and lse) of args under routing attention (see the top of this file) on
/// `backend`: q (b, hq, sq, d), strided k and v; params: causal (by position),
/// scale and softcap. Allocates the gathered clusters of one head at a time.
template <class TQ, class TK, class TV, class TO, class Backend>
void routing_attention(const attention_args<TQ, TK, TV, TO>& args, const routing_centroids& centroids,
                       const routing_options& opt, const Backend& backend) {
  constexpr const char* fn = "routing_attention";
  static_assert(!is_quantized_v<std::remove_const_t<TK>> && !is_quantized_v<std::remove_const_t<TV>>,
                "routing_attention takes float, half or bfloat16 k and v (dequantize first)");
  detail::check_routing_args(fn, args.params, args.k.is_paged, detail::is_given(args.cu_seqlens_q),
                             detail::is_given(args.mask.bits), args.sparse.given(), detail::is_given(args.kw));
  const detail::checked_call c = detail::check_args(fn, args);
  const attention_shape& s = c.s;
  ATTNKIT_CHECK(centroids.heads() == s.hq && centroids.dim() == s.d, fn, ": centroids of (", centroids.heads(), ", ",
                centroids.clusters(), ", ", centroids.dim(), ") do not match hq = ", s.hq, ", d = ", s.d);
  ATTNKIT_CHECK(opt.window >= 0, fn, ": options.window must be >= 0, got ", opt.window);
  const std::int64_t nc = centroids.clusters();
  const std::int64_t w = opt.window > 0 ? opt.window : (std::max(s.sq, s.skv) + nc - 1) / nc;
  const std::int64_t wq = std::min(w, s.sq), wk = std::min(w, s.skv), bytes = (wk + 7) / 8;
  tensor<float, 4> q({nc, 1, std::max<std::int64_t>(wq, 1), s.d}), k({nc, 1, std::max<std::int64_t>(wk, 1), s.d});
  tensor<float, 4> v({nc, 1, std::max<std::int64_t>(wk, 1), s.dv}), o({nc, 1, std::max<std::int64_t>(wq, 1), s.dv});
  tensor<float, 3> lse({nc, 1, std::max<std::int64_t>(wq, 1)});
  std::vector<std::uint8_t> bits(static_cast<std::size_t>(nc * wq * bytes));
  std::vector<float> acc(static_cast<std::size_t>(s.sq * s.dv)), acc_lse(static_cast<std::size_t>(s.sq));
  for (std::int64_t b = 0; b < s.b; ++b) {
    const sequence_span span = c.batch.span(b, s.skv);
    for (std::int64_t h = 0; h < s.hq; ++h) {
      const std::int64_t hk = h / (s.hq / s.hkv);
      const std::vector<routing_members> m = route(args.q, args.k.strided, centroids, b, h, opt, backend);
      // Gather each cluster, its causal bitmask by original positions.
      std::fill(bits.begin(), bits.end(), std::uint8_t{0});
      for (std::int64_t x = 0; x < nc; ++x) {
        const routing_members& cm = m[static_cast<std::size_t>(x)];
        for (std::int64_t r = 0; r < wq; ++r)
          for (std::int64_t y = 0; y < s.d; ++y) q(x, 0, r, y) = to_float(args.q(b, h, cm.queries[static_cast<std::size_t>(r)], y));
        for (std::int64_t r = 0; r < wk; ++r) {
          const std::int64_t j = cm.keys[static_cast<std::size_t>(r)];
          for (std::int64_t y = 0; y < s.d; ++y) k(x, 0, r, y) = to_float(args.k.strided(b, hk, j, y));
          for (std::int64_t y = 0; y < s.dv; ++y) v(x, 0, r, y) = to_float(args.v.strided(b, hk, j, y));
        }
        for (std::int64_t r = 0; r < wq; ++r)
          for (std::int64_t t = 0; t < wk; ++t) {
            const std::int64_t p = span.q_pos + cm.queries[static_cast<std::size_t>(r)];
            const std::int64_t kp = span.k_pos + cm.keys[static_cast<std::size_t>(t)];
            if (!args.params.causal || kp <= p) bits[static_cast<std::size_t>((x * wq + r) * bytes + t / 8)] |= std::uint8_t(1u << (t % 8));
          }
      }
      auto a = make_attention_args(q.cview(), k.cview(), v.cview(), o.view());
      a.params.scale = args.params.scale;
      a.params.softcap = args.params.softcap;
      a.lse = lse.view();
      a.mask.bits = tensor_view<const std::uint8_t, 3>(bits.data(), {1, nc * wq, bytes});
      if (wq > 0 && wk > 0) flash_attention(a, backend);
      // Each query's clusters, merged by lse in cluster order.
      std::fill(acc.begin(), acc.end(), 0.0f);
      std::fill(acc_lse.begin(), acc_lse.end(), -std::numeric_limits<float>::infinity());
      for (std::int64_t x = 0; x < nc && wk > 0; ++x)
        for (std::int64_t r = 0; r < wq; ++r) {
          const std::int64_t i = m[static_cast<std::size_t>(x)].queries[static_cast<std::size_t>(r)];
          const merge_weights mw = merge_lse(acc_lse[static_cast<std::size_t>(i)], lse(x, 0, r));
          for (std::int64_t y = 0; y < s.dv; ++y) {
            float& out = acc[static_cast<std::size_t>(i * s.dv + y)];
            out = (mw.a == 0.0f ? 0.0f : mw.a * out) + (mw.b == 0.0f ? 0.0f : mw.b * o(x, 0, r, y));
          }
          acc_lse[static_cast<std::size_t>(i)] = mw.lse;
        }
      for (std::int64_t i = 0; i < s.sq; ++i) {
        for (std::int64_t y = 0; y < s.dv; ++y) args.o(b, h, i, y) = from_float<TO>(acc[static_cast<std::size_t>(i * s.dv + y)]);
        if (detail::is_given(args.lse)) args.lse(b, h, i) = acc_lse[static_cast<std::size_t>(i)];
      }
    }
  }
}

ATTNKIT_END_NAMESPACE
