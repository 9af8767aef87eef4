// H2O, the heavy-hitter oracle (Zhang et al., NeurIPS 2023).
//
// Score: the attention each cached key has received since it entered,
//   S[j] = sum over observed query rows i of A_i[j]
// summed over the query heads of each KV head (the key weights of the call).
// Keeps the `recent` newest rows plus the highest-scoring older rows up to the
// budget. Schedule: observe after every attention call; select after prefill
// cuts to the budget at once, and each decode step at budget evicts the one
// lowest-scoring row (slack > 0 batches that). Scores are per sequence: one
// policy object per (sequence, layer). Positions stay original.
#pragma once

#include <cstdint>
#include <utility>

#include "attnkit/core/config.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/kv/policy/budget.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

class h2o : public detail::scored_policy {
 public:
  explicit h2o(budget_options o) : scored_policy("h2o", std::move(o)) {}

  /// Adds one call's key weights (hkv, >= longest head), whatever its row count.
  void observe(const token_index& index, tensor_view<const float, 2> weights, std::int64_t /*rows*/ = 1) {
    scores_.accumulate(index, weights, 1.0f);
  }
};

ATTNKIT_END_NAMESPACE
