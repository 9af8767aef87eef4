// token_index: which tokens a KV cache holds, per KV head, without the storage:
// each head's length and the position of each of its rows. Policies read it to
// decide what to keep; the cache updates it on append and compaction.
//
// Position modes (explicit, per cache):
//   original  a row keeps the position its token had in the text (H2O, DuoAttention)
//   in_cache  a row's position is its index in the cache, so positions stay
//             0..length-1 after eviction (StreamingLLM; keys re-rotated or cached pre-RoPE)
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"

ATTNKIT_BEGIN_NAMESPACE

enum class position_mode { original, in_cache };

class token_index {
 public:
  token_index(std::int64_t heads, position_mode mode) : mode_(mode), positions_(static_cast<std::size_t>(heads)) {
    ATTNKIT_CHECK(heads > 0, "token_index: heads must be > 0, got ", heads);
  }

  std::int64_t heads() const { return static_cast<std::int64_t>(positions_.size()); }
  position_mode mode() const { return mode_; }
  std::int64_t length(std::int64_t h) const { return static_cast<std::int64_t>(positions_[h].size()); }
  std::int64_t max_length() const {
    std::int64_t n = 0;
    for (const auto& p : positions_) n = std::max(n, static_cast<std::int64_t>(p.size()));
    return n;
  }
  /// True when every head holds the same number of tokens.
  bool uniform() const {
    for (const auto& p : positions_)
      if (p.size() != positions_[0].size()) return false;
    return true;
  }
  /// Tokens appended since the cache was created (evicted ones included).
  std::int64_t seen() const { return seen_; }
  /// Position of row j of head h.
  std::int64_t position(std::int64_t h, std::int64_t j) const { return positions_[h][j]; }
  const std::vector<std::int64_t>& positions(std::int64_t h) const { return positions_[h]; }
  /// The position the next appended token gets in head h (what its q and k are rotated by).
  std::int64_t next_position(std::int64_t h) const { return mode_ == position_mode::original ? seen_ : length(h); }

  /// Records n new tokens at the end of every head.
  void append(std::int64_t n) {
    for (std::int64_t h = 0; h < heads(); ++h) {
      const std::int64_t first = next_position(h);
      for (std::int64_t i = 0; i < n; ++i) positions_[h].push_back(first + i);
    }
    seen_ += n;
  }

  /// Keeps rows kept[0] < kept[1] < ... of head h (validated by the caller).
  void retain(std::int64_t h, const std::vector<std::int64_t>& kept) {
    std::vector<std::int64_t>& p = positions_[h];
    for (std::size_t r = 0; r < kept.size(); ++r)
      p[r] = mode_ == position_mode::original ? p[kept[r]] : static_cast<std::int64_t>(r);
    p.resize(kept.size());
    settled_ = seen_;
  }

  /// The fewest tokens truncate can roll back to: in_cache positions are
  /// renumbered by compaction, so rows older than the last one have no token number.
  std::int64_t truncate_floor() const { return mode_ == position_mode::original ? 0 : settled_; }

  /// Rows head h keeps after truncate(n): those of the first n tokens appended.
  std::int64_t length_after_truncate(std::int64_t h, std::int64_t n) const {
    const std::vector<std::int64_t>& p = positions_[h];
    if (mode_ == position_mode::original) return std::lower_bound(p.begin(), p.end(), n) - p.begin();
    return length(h) - (seen_ - n);  // the rows since the last compaction are the tail, one per token
  }

  /// Forgets the tokens appended from the n-th on (n in [truncate_floor(), seen()], checked by the caller).
  void truncate(std::int64_t n) {
    for (std::int64_t h = 0; h < heads(); ++h) positions_[h].resize(static_cast<std::size_t>(length_after_truncate(h, n)));
    seen_ = n;
  }

 private:
  position_mode mode_;
  std::vector<std::vector<std::int64_t>> positions_;  // per head, one per row
  std::int64_t seen_ = 0;
  std::int64_t settled_ = 0;  // seen() at the last retain
};

ATTNKIT_END_NAMESPACE
