// key_scores: a per-key attention accumulator for each KV head, aligned with
// the cache rows (row j of head h has score(h, j)). Policies feed it the key
// weights of each attention call (attention/key_weights.hpp) and keep it in
// step with the cache through retain().
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

class key_scores {
 public:
  /// Rows appended since the last call start at 0; then s = decay * s + w for
  /// every cached row. w is (hkv, >= longest head): the call's key weights per
  /// KV head. decay = 0 replaces the scores by w.
  void accumulate(const token_index& index, tensor_view<const float, 2> w, float decay) {
    ATTNKIT_CHECK(w.extent(0) == index.heads() && w.extent(1) >= index.max_length() &&
                      (w.empty() || w.data_handle() != nullptr),
                  "key_scores: weights must be (hkv = ", index.heads(), ", >= ", index.max_length(), "), got (",
                  w.extent(0), ", ", w.extent(1), ")");
    s_.resize(static_cast<std::size_t>(index.heads()));
    for (std::int64_t h = 0; h < index.heads(); ++h) {
      std::vector<float>& s = s_[h];
      s.resize(static_cast<std::size_t>(index.length(h)), 0.0f);
      const float* wh = w.data_handle() + h * w.stride(0);
      const std::int64_t n = index.length(h);
      if (w.stride(1) == 1)  // the usual case, kept apart so the loop vectorizes
        fold(s.data(), wh, std::integral_constant<std::int64_t, 1>{}, n, decay);
      else
        fold(s.data(), wh, w.stride(1), n, decay);
    }
  }

  /// Follows a compaction: keeps the scores of the kept rows, in order.
  void retain(const keep_set& keep) {
    for (std::size_t h = 0; h < s_.size() && h < keep.heads.size(); ++h) {
      std::vector<float> kept_scores;
      for (const std::int64_t j : keep.heads[h]) kept_scores.push_back((*this)(static_cast<std::int64_t>(h), j));
      s_[h] = std::move(kept_scores);
    }
  }

  /// Score of row j of head h; 0 for a row never observed.
  float operator()(std::int64_t h, std::int64_t j) const {
    return h < static_cast<std::int64_t>(s_.size()) && j < static_cast<std::int64_t>(s_[h].size()) ? s_[h][j] : 0.0f;
  }

 private:
  template <class Step>
  static void fold(float* s, const float* w, Step step, std::int64_t n, float decay) {
    if (decay == 0.0f) {
      for (std::int64_t j = 0; j < n; ++j) s[j] = w[j * step];
    } else {
      for (std::int64_t j = 0; j < n; ++j) s[j] = decay * s[j] + w[j * step];
    }
  }

  std::vector<std::vector<float>> s_;  // per head, one per cached row
};

ATTNKIT_END_NAMESPACE
