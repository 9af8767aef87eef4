// What the score-based policies (H2O, A2SF) share: a token budget per KV head
// that includes protected sinks and a recent window, pinned tokens, eviction
// slack, the per-key scores, and the selection that follows from them.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/scores.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct budget_options {
  std::int64_t budget = 0;            ///< rows kept per KV head after an eviction, >= sinks + recent
  std::int64_t sinks = 0;             ///< first rows always kept
  std::int64_t recent = 0;            ///< last rows always kept
  std::int64_t slack = 0;             ///< evict only past budget + slack (batches of slack + 1), >= 0
  std::vector<std::int64_t> pinned;   ///< token positions always kept
};

namespace detail {

/// Budget, protection and scores; select keeps the top-scoring rows per head.
class scored_policy {
 public:
  static constexpr bool wants_weights = true;

  scored_policy(const char* name, budget_options o) : o_(std::move(o)) {
    check_protection(name, protection{o_.sinks, o_.recent, {}}, o_.budget);
    check_rows(name, "slack", o_.slack);
  }

  const budget_options& options() const { return o_; }
  const key_scores& scores() const { return scores_; }

  /// The rows to keep once a head is over budget + slack, else nullopt.
  std::optional<keep_set> select(const token_index& index) const {
    return select_over_budget(
        index, [&](std::int64_t) { return o_.budget; }, o_.slack, protection{o_.sinks, o_.recent, o_.pinned},
        [&](std::int64_t h, std::int64_t j) { return scores_(h, j); });
  }

  /// Follows the cache's compaction.
  void retain(const keep_set& keep) { scores_.retain(keep); }

 protected:
  budget_options o_;
  key_scores scores_;
};

}  // namespace detail
ATTNKIT_END_NAMESPACE
