// keep_set and the selection machinery every policy shares.
//
// A keep_set lists, per KV head, the cache rows to keep in increasing order;
// compaction (kv_cache::compact) applies it. Protected rows (the first `sinks`,
// the last `recent`, and tokens the caller pinned by position) are always
// kept. keep_top fills the rest of a budget with the highest-scoring rows;
// equal scores keep the lower row (the lower position), so selections are
// deterministic.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <optional>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct keep_set {
  std::vector<std::vector<std::int64_t>> heads;  // per KV head: increasing row indices
};

/// Rows no policy may evict.
struct protection {
  std::int64_t sinks = 0;              ///< the first rows of each head (attention sinks)
  std::int64_t recent = 0;             ///< the last rows of each head (local window)
  std::vector<std::int64_t> pinned;    ///< token positions kept wherever they are

  bool covers(const token_index& index, std::int64_t h, std::int64_t j) const {
    return j < sinks || j >= index.length(h) - recent ||
           std::find(pinned.begin(), pinned.end(), index.position(h, j)) != pinned.end();
  }
};

namespace detail {

/// A row count of a policy option (budget, sinks, recent, slack, ...) in [least, 2^31):
/// a cache never holds more rows, and a sum of a few such counts cannot overflow.
inline void check_rows(const char* fn, const char* name, std::int64_t n, std::int64_t least = 0) {
  ATTNKIT_CHECK(n >= least && n <= INT32_MAX, fn, ": ", name, " must be in [", least, ", 2^31), got ", n);
}

inline void check_protection(const char* fn, const protection& p, std::int64_t budget) {
  check_rows(fn, "sinks", p.sinks);
  check_rows(fn, "recent", p.recent);
  check_rows(fn, "budget", budget);
  ATTNKIT_CHECK(budget >= p.sinks + p.recent, fn, ": budget = ", budget, " must be >= sinks + recent = ",
                p.sinks + p.recent);
}

}  // namespace detail

/// The rows of head h to keep within `budget`: every protected row, then the
/// best-scoring others (score(j) higher first, lower j on ties). Keeps all rows
/// when the head fits. Pinned rows beyond the budget are kept anyway.
template <class Score>
std::vector<std::int64_t> keep_top(const token_index& index, std::int64_t h, std::int64_t budget,
                                   const protection& prot, Score&& score) {
  const std::int64_t n = index.length(h);
  std::vector<char> kept(static_cast<std::size_t>(n), 0);  // marks, read in row order below: no sort
  std::vector<std::int64_t> candidates;
  std::int64_t protected_rows = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    if (prot.covers(index, h, j) || n <= budget)
      kept[j] = 1, ++protected_rows;
    else
      candidates.push_back(j);
  }
  const std::int64_t room = std::max<std::int64_t>(0, budget - protected_rows);
  if (room < static_cast<std::int64_t>(candidates.size())) {
    struct ranked {
      float key;
      std::int64_t row;
    };
    std::vector<ranked> r(candidates.size());  // each score read once, then ranked by value
    for (std::size_t c = 0; c < r.size(); ++c) {
      const float x = score(candidates[c]);
      r[c] = {std::isnan(x) ? -INFINITY : x, candidates[c]};  // NaN ranks lowest, so the order stays strict
    }
    std::nth_element(r.begin(), r.begin() + room, r.end(), [](const ranked& a, const ranked& b) {
      return a.key > b.key || (a.key == b.key && a.row < b.row);
    });
    for (std::int64_t c = 0; c < room; ++c) kept[r[c].row] = 1;
  } else {
    for (const std::int64_t j : candidates) kept[j] = 1;
  }
  std::vector<std::int64_t> keep;
  keep.reserve(static_cast<std::size_t>(std::min(n, protected_rows + room)));
  for (std::int64_t j = 0; j < n; ++j)
    if (kept[j]) keep.push_back(j);
  return keep;
}

/// The eviction rule of every policy: once some head holds more than its
/// budget(h) + slack rows, every head over its budget is cut to it by keep_top
/// (slack > 0 evicts in batches, so compaction runs once per `slack` tokens);
/// before that, nothing (nullopt).
template <class Budget>
bool over_budget(const token_index& index, Budget&& budget, std::int64_t slack) {
  for (std::int64_t h = 0; h < index.heads(); ++h)
    if (index.length(h) - budget(h) > slack) return true;  // no sum: budget(h) may be huge (duo's retrieval heads)
  return false;
}

template <class Budget, class Score>
std::optional<keep_set> select_over_budget(const token_index& index, Budget&& budget, std::int64_t slack,
                                           const protection& prot, Score&& score) {
  if (!over_budget(index, budget, slack)) return std::nullopt;
  keep_set keep;
  for (std::int64_t h = 0; h < index.heads(); ++h)
    keep.heads.push_back(keep_top(index, h, budget(h), prot, [&](std::int64_t j) { return score(h, j); }));
  return keep;
}

/// Every row of every head: the keep_set of a cache that evicts nothing.
inline keep_set keep_all(const token_index& index) {
  keep_set k;
  for (std::int64_t h = 0; h < index.heads(); ++h) {
    k.heads.emplace_back(static_cast<std::size_t>(index.length(h)));
    std::iota(k.heads.back().begin(), k.heads.back().end(), 0);
  }
  return k;
}

ATTNKIT_END_NAMESPACE
