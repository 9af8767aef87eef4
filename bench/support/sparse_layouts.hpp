// What a block-sparse layout selects, for benchmark counters: whether a row
// sees a key, the (row, key) pairs it lets through, and the share of dense
// attention's softmax mass on them (attention-mass recall).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attnkit/attention/dense.hpp"
#include "attnkit/attention/sparse/layout.hpp"
#include "attnkit/core/tensor.hpp"
#include "support/workloads.hpp"

namespace attnkit::bench {

/// Row i of head h attends key j under the layout (one sequence, default positions, causal).
inline bool layout_sees(const owned_layout& l, const bench::problem& p, std::int64_t h, std::int64_t i,
                        std::int64_t j) {
  const std::int64_t pos = p.skv - p.sq + i;
  if (j > pos) return false;
  const block_sparse_layout& s = l.shape;
  if (j < s.sinks || pos - j < s.window) return true;
  const std::int64_t g = h / s.head_group, qb = i / s.block_q;
  return std::binary_search(l.first(0, g, qb), l.last(0, g, qb), j / s.block_k);
}

/// (row, key) pairs the layout lets through, over every head.
inline double visited_pairs(const owned_layout& l, const bench::problem& p) {
  double n = 0;
  for (std::int64_t h = 0; h < p.hq; ++h)
    for (std::int64_t i = 0; i < p.sq; ++i)
      for (std::int64_t j = 0; j <= p.skv - p.sq + i; ++j) n += layout_sees(l, p, h, i, j);
  return n;
}

/// The mean over `rows` sample rows and every head of the softmax mass (dense
/// fp32 attention, causal) on the keys the layout selects; q, k and v are (1, h, s, d).
template <class TQ, class TK, class TV>
double mass_recall(const owned_layout& l, const problem& p, tensor_view<TQ, 4> q, tensor_view<TK, 4> k,
                   tensor_view<TV, 4> v, const std::vector<std::int64_t>& rows) {
  attention_params causal;
  causal.causal = true;
  double mass = 0;
  for (const std::int64_t i : rows) {
    const std::int64_t keys = p.skv - p.sq + i + 1;  // the row sits at the last of keys [0, keys)
    tensor<float, 4> o({1, p.hq, 1, p.dv}), probs({1, p.hq, 1, keys});
    dense_attention(q.slice(2, i, i + 1), k.slice(2, 0, keys), v.slice(2, 0, keys), o.view(), causal, {}, probs.view());
    for (std::int64_t h = 0; h < p.hq; ++h)
      for (std::int64_t j = 0; j < keys; ++j)
        if (layout_sees(l, p, h, i, j)) mass += probs(0, h, 0, j);
  }
  return mass / (static_cast<double>(rows.size()) * p.hq);
}

}  // namespace attnkit::bench
