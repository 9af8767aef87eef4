// StreamingLLM: attention sinks plus a recent window (Xiao et al., ICLR 2024).
//
// Keeps rows [0, sinks) and the last `recent` rows of every head; no scores. Pair
// it with a cache in position_mode::in_cache, as the paper does: keys are then
// at positions 0..length-1, so the model never sees a position past its
// training window. With keys cached after RoPE, give the cache a `rerotate`
// rope and compaction turns each moved key to its new position. Schedule: the
// perplexity evaluation trims after every token (slack 0); slack > 0 trims in batches.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct streaming_options {
  std::int64_t sinks = 4;             ///< the paper's default
  std::int64_t recent = 0;            ///< > 0
  std::int64_t slack = 0;             ///< >= 0
  std::vector<std::int64_t> pinned;   ///< token positions also kept
};

class streaming_llm {
 public:
  static constexpr bool wants_weights = false;

  explicit streaming_llm(streaming_options o) : o_(std::move(o)) {
    detail::check_rows("streaming_llm", "sinks", o_.sinks);
    detail::check_rows("streaming_llm", "recent", o_.recent, 1);
    detail::check_rows("streaming_llm", "slack", o_.slack);
  }

  std::int64_t budget() const { return o_.sinks + o_.recent; }

  void observe(const token_index&, tensor_view<const float, 2> = {}, std::int64_t = 1) {}

  std::optional<keep_set> select(const token_index& index) const {
    return select_over_budget(
        index, [&](std::int64_t) { return budget(); }, o_.slack, protection{o_.sinks, o_.recent, o_.pinned},
        [](std::int64_t, std::int64_t) { return 0.0f; });
  }

  void retain(const keep_set&) {}

 private:
  streaming_options o_;
};

ATTNKIT_END_NAMESPACE
