// Block-sparse layouts for tests: plain sorted lists per (sequence, head group,
// query block), the BSR views built from them, and the visibility rule of
// attention/sparse/layout.hpp written again from its definition, for the oracle.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "attnkit/attention/sparse/layout.hpp"
#include "attnkit/core/tensor_view.hpp"

namespace attnkit::test {

struct layout_lists {
  std::int64_t block_q = 1, block_k = 1, head_group = 1, sinks = 0, window = 0;
  std::int64_t b = 0, groups = 0, qblocks = 0;  // indptr is (b, groups, qblocks + 1)
  std::vector<std::vector<std::int64_t>> lists;  // [(b * groups + g) * qblocks + qb]: ascending ids
  std::vector<std::int64_t> indptr, indices;

  layout_lists(std::int64_t b_, std::int64_t groups_, std::int64_t qblocks_)
      : b(b_), groups(groups_), qblocks(qblocks_), lists(static_cast<std::size_t>(b_ * groups_ * qblocks_)) {}

  std::vector<std::int64_t>& list(std::int64_t bi, std::int64_t g, std::int64_t qb) {
    return lists[static_cast<std::size_t>((bi * groups + g) * qblocks + qb)];
  }
  const std::vector<std::int64_t>& list(std::int64_t bi, std::int64_t g, std::int64_t qb) const {
    return lists[static_cast<std::size_t>((bi * groups + g) * qblocks + qb)];
  }

  /// The BSR views of the lists (valid while this object lives and is not rebuilt).
  block_sparse_layout view() {
    indptr.clear();
    indices.clear();
    for (std::int64_t x = 0; x < b * groups; ++x) {
      for (std::int64_t qb = 0; qb < qblocks; ++qb) {
        indptr.push_back(static_cast<std::int64_t>(indices.size()));
        const auto& l = lists[static_cast<std::size_t>(x * qblocks + qb)];
        indices.insert(indices.end(), l.begin(), l.end());
      }
      indptr.push_back(static_cast<std::int64_t>(indices.size()));
    }
    block_sparse_layout l;
    l.block_q = block_q;
    l.block_k = block_k;
    l.head_group = head_group;
    l.sinks = sinks;
    l.window = window;
    l.indptr = tensor_view<const std::int64_t, 3>(indptr.data(), {b, groups, qblocks + 1});
    l.indices = tensor_view<const std::int64_t, 1>(indices.data(), {static_cast<std::int64_t>(indices.size())});
    return l;
  }

  /// Whether row i (at position p) of query head h of sequence bi sees key j (at kp) by the layout.
  bool sees(std::int64_t bi, std::int64_t h, std::int64_t i, std::int64_t j, std::int64_t p, std::int64_t kp) const {
    if (kp <= p && (kp < sinks || p - kp < window)) return true;
    const auto& l = list(bi, h / head_group, i / block_q);
    return std::find(l.begin(), l.end(), j / block_k) != l.end();
  }
};

/// Lists that keep each key block with probability `density`; sequence bi has
/// rows[bi] query rows and keys[bi] keys.
inline layout_lists random_layout(const std::vector<std::int64_t>& rows, const std::vector<std::int64_t>& keys,
                                  std::int64_t groups, std::int64_t block_q, std::int64_t block_k, double density,
                                  std::mt19937_64& rng) {
  const std::int64_t b = static_cast<std::int64_t>(rows.size());
  const std::int64_t most = *std::max_element(rows.begin(), rows.end());
  layout_lists l(b, groups, std::max<std::int64_t>(1, (most + block_q - 1) / block_q));
  l.block_q = block_q;
  l.block_k = block_k;
  std::bernoulli_distribution keep(density);
  for (std::int64_t bi = 0; bi < b; ++bi)
    for (std::int64_t g = 0; g < groups; ++g)
      for (std::int64_t qb = 0; qb * block_q < rows[bi]; ++qb)
        for (std::int64_t kb = 0; kb * block_k < keys[bi]; ++kb)
          if (keep(rng)) l.list(bi, g, qb).push_back(kb);
  return l;
}

}  // namespace attnkit::test
