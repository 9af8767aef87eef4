// SnapKV (Li et al. 2024): the end of the prompt already shows what the
// generation will look at.
//
// Score: the attention of the last `window` prompt queries on each earlier key
// (observe the prefill call with row_weights = window_row_weights), summed over
// the GQA group and pooled along the keys (average or max over `kernel`
// neighbours, zero padding for the average). Keeps the whole window plus the
// top budget - window earlier rows, once, after prefill; decode rows are never
// evicted. Positions stay original.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/scores.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

enum class snapkv_pooling { avg, max };

struct snapkv_options {
  std::int64_t budget = 2048;  ///< rows kept per head (the repo's C), >= window
  std::int64_t window = 32;    ///< observation window w, >= 1
  std::int64_t kernel = 5;     ///< pooling width, odd
  snapkv_pooling pooling = snapkv_pooling::avg;
};

class snapkv {
 public:
  static constexpr bool wants_weights = true;

  explicit snapkv(snapkv_options o) : o_(o) {
    detail::check_rows("snapkv", "window", o_.window, 1);
    detail::check_rows("snapkv", "budget", o_.budget, 1);
    detail::check_rows("snapkv", "kernel", o_.kernel, 1);
    ATTNKIT_CHECK(o_.budget >= o_.window, "snapkv: window >= 1 and budget >= window required, got ",
                  o_.window, " and ", o_.budget);
    ATTNKIT_CHECK(o_.kernel >= 1 && o_.kernel % 2 == 1, "snapkv: kernel must be odd and >= 1, got ", o_.kernel);
  }

  /// Row weights of the prefill call with sq rows: 1 on the last `window` rows.
  std::vector<float> window_row_weights(std::int64_t sq) const {
    std::vector<float> w(static_cast<std::size_t>(sq > 0 ? sq : 0), 0.0f);
    for (std::int64_t i = std::max<std::int64_t>(0, sq - o_.window); i < sq; ++i) w[i] = 1.0f;
    return w;
  }

  /// Takes the prefill call's key weights (hkv, >= longest head); later calls are ignored.
  void observe(const token_index& index, tensor_view<const float, 2> weights, std::int64_t = 1) {
    if (!done_) scores_.accumulate(index, weights, 0.0f);
  }

  /// The one selection, at the first call after prefill; nullopt ever after.
  std::optional<keep_set> select(const token_index& index) {
    if (done_) return std::nullopt;
    done_ = true;
    std::vector<std::vector<float>> pooled(static_cast<std::size_t>(index.heads()));
    for (std::int64_t h = 0; h < index.heads(); ++h) pooled[h] = pool(index, h);
    return select_over_budget(
        index, [&](std::int64_t) { return o_.budget; }, 0, protection{0, o_.window, {}},
        [&](std::int64_t h, std::int64_t j) { return pooled[h][j]; });
  }

  void retain(const keep_set&) {}

 private:
  /// Scores of the rows before the window, pooled along the keys within that prefix.
  std::vector<float> pool(const token_index& index, std::int64_t h) const {
    const std::int64_t n = std::max<std::int64_t>(0, index.length(h) - o_.window), r = o_.kernel / 2;
    std::vector<float> out(static_cast<std::size_t>(index.length(h)), 0.0f);
    for (std::int64_t j = 0; j < n; ++j) {
      float acc = o_.pooling == snapkv_pooling::avg ? 0.0f : -INFINITY;
      for (std::int64_t t = std::max<std::int64_t>(0, j - r); t <= std::min(n - 1, j + r); ++t)
        acc = o_.pooling == snapkv_pooling::avg ? acc + scores_(h, t) : std::max(acc, scores_(h, t));
      out[j] = o_.pooling == snapkv_pooling::avg ? acc / static_cast<float>(o_.kernel) : acc;
    }
    return out;
  }

  snapkv_options o_;
  key_scores scores_;
  bool done_ = false;
};

ATTNKIT_END_NAMESPACE
