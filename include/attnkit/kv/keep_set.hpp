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
  std::vector<std::int64_t> keep, candidates;
  for (std::int64_t j = 0; j < n; ++j) (prot.covers(index, h, j) || n <= budget ? keep : candidates).push_back(j);
  const std::int64_t room = std::max<std::int64_t>(0, budget - static_cast<std::int64_t>(keep.size()));
  if (room < static_cast<std::int64_t>(candidates.size())) {
    const auto key = [&](std::int64_t j) {  // NaN ranks lowest, so the order stays strict
      const float x = score(j);
      return std::isnan(x) ? -INFINITY : x;
    };
    const auto better = [&](std::int64_t a, std::int64_t b) {
      const float sa = key(a), sb = key(b);
      return sa > sb || (sa == sb && a < b);
    };
    std::nth_element(candidates.begin(), candidates.begin() + room, candidates.end(), better);
    candidates.resize(static_cast<std::size_t>(room));
  }
  keep.insert(keep.end(), candidates.begin(), candidates.end());
  std::sort(keep.begin(), keep.end());
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
