// A2SF, accumulative attention score with a forgetting factor (Jo & Shin 2024).
//
// Score: S_t[j] = sum over steps i <= t of alpha^(t-i) A_i[j], kept incrementally
// as S <- alpha^rows * S + (this call's weights), where a call of `rows` query
// rows weighs row i by alpha^(rows-1-i) (pass row_weights(alpha, sq) as the
// call's key_weights.row_weights). Decay lets late tokens compete with early
// ones, which plain accumulation favours. alpha = 1 is H2O; alpha = 0 keeps what
// the last row attended to most. alpha has no default: it is tuned per task.
// Selection, protection and schedule are H2O's.
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/kv/policy/budget.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

class a2sf : public detail::scored_policy {
 public:
  a2sf(budget_options o, float alpha) : scored_policy("a2sf", std::move(o)), alpha_(alpha) {
    ATTNKIT_CHECK(alpha >= 0.0f && alpha <= 1.0f, "a2sf: alpha must be in [0, 1], got ", alpha);
  }

  float alpha() const { return alpha_; }

  /// Row weights alpha^(sq-1-i) of a call with sq query rows.
  static std::vector<float> row_weights(float alpha, std::int64_t sq) {
    std::vector<float> w(static_cast<std::size_t>(sq > 0 ? sq : 0));
    for (std::int64_t i = 0; i < sq; ++i) w[i] = static_cast<float>(std::pow(static_cast<double>(alpha), sq - 1 - i));
    return w;
  }

  /// Decays the scores by alpha^rows and adds a call's key weights (hkv, >= longest head).
  void observe(const token_index& index, tensor_view<const float, 2> weights, std::int64_t rows = 1) {
    ATTNKIT_CHECK(rows >= 1, "a2sf::observe: rows must be >= 1, got ", rows);
    scores_.accumulate(index, weights, static_cast<float>(std::pow(static_cast<double>(alpha_), rows)));
  }

 private:
  float alpha_;
};

ATTNKIT_END_NAMESPACE
