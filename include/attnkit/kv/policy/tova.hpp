// TOVA, token omission via attention (Oren et al. 2024, "Transformers are
// Multi-State RNNs").
//
// Score: the attention of the newest query only, averaged over all heads of the
// layer, so one keep-set serves every head. Keeps the top cache_size rows;
// no sinks or window unless asked (protection). Schedule: once the prompt is
// in (observe with row_weights = the last row only, see last_row_weights), then
// every step. Positions stay original.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/scores.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct tova_options {
  std::int64_t cache_size = 0;  ///< rows kept, > sinks + recent of keep
  std::int64_t slack = 0;       ///< >= 0
  protection keep;              ///< optional protected rows (none by default)
};

class tova {
 public:
  static constexpr bool wants_weights = true;

  explicit tova(tova_options o) : o_(std::move(o)) {
    detail::check_protection("tova", o_.keep, o_.cache_size);
    detail::check_rows("tova", "cache_size", o_.cache_size, 1);
    detail::check_rows("tova", "slack", o_.slack);
  }

  /// Row weights of a call with sq query rows: only the last row counts.
  static std::vector<float> last_row_weights(std::int64_t sq) {
    std::vector<float> w(static_cast<std::size_t>(sq > 0 ? sq : 0), 0.0f);
    if (sq > 0) w.back() = 1.0f;
    return w;
  }

  /// Replaces the scores by the newest row's weights (hkv, >= length), summed over heads.
  void observe(const token_index& index, tensor_view<const float, 2> weights, std::int64_t = 1) {
    check_uniform(index);
    scores_.accumulate(index, weights, 0.0f);
  }

  std::optional<keep_set> select(const token_index& index) const {
    check_uniform(index);
    const auto budget = [&](std::int64_t) { return o_.cache_size; };
    if (!over_budget(index, budget, o_.slack)) return std::nullopt;
    std::vector<float> layer(static_cast<std::size_t>(index.length(0)), 0.0f);  // every head's weight on row j
    for (std::int64_t h = 0; h < index.heads(); ++h)
      for (std::int64_t j = 0; j < index.length(0); ++j) layer[j] += scores_(h, j);
    return select_over_budget(
        index, budget, o_.slack, o_.keep,
        [&](std::int64_t, std::int64_t j) { return layer[j]; });
  }

  void retain(const keep_set& keep) { scores_.retain(keep); }

 private:
  static void check_uniform(const token_index& index) {
    ATTNKIT_CHECK(index.uniform(), "tova: every head must hold the same rows (TOVA keeps one set per layer)");
  }

  tova_options o_;
  key_scores scores_;
};

ATTNKIT_END_NAMESPACE
