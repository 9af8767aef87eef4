// Rotary position embedding (RoPE) of one row, for re-rotating cached keys
// when compaction moves them to new positions (and for engines that rotate q
// and k themselves).
//
// Pair i of the rotary dims (i < rotary_dim / 2) turns by position * theta^(-2i / rotary_dim):
//   half_split  : pairs (x[i], x[i + rotary_dim/2])   (Llama, GPT-NeoX)
//   interleaved : pairs (x[2i], x[2i + 1])            (GPT-J, the original RoPE)
// Dims past rotary_dim are left alone. Rotations compose: rotating by a then
// by b equals rotating by a + b, so a key cached at position p moves to p' by
// rotating it by p' - p.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"

ATTNKIT_BEGIN_NAMESPACE

enum class rope_layout { half_split, interleaved };

struct rope {
  double theta = 10000.0;                         ///< base of the frequencies, > 0
  rope_layout layout = rope_layout::half_split;
  std::int64_t rotary_dim = 0;                    ///< even, <= d; 0: all of d
};

namespace detail {

inline std::int64_t rotary_dims(const rope& r, std::int64_t d) { return r.rotary_dim == 0 ? d : r.rotary_dim; }

inline void check_rope(const char* fn, const rope& r, std::int64_t d) {
  ATTNKIT_CHECK(std::isfinite(r.theta) && r.theta > 0.0, fn, ": rope.theta must be finite and > 0, got ", r.theta);
  const std::int64_t rd = rotary_dims(r, d);
  ATTNKIT_CHECK(rd >= 0 && rd <= d && rd % 2 == 0, fn, ": rope.rotary_dim must be even and in [0, d = ", d,
                "], got ", r.rotary_dim);
}

}  // namespace detail

/// The rotation of one position: cos and sin of each pair's angle, computed once
/// (in double, so large positions keep their precision) and applied to many rows.
class rope_rotation {
 public:
  rope_rotation(double position, std::int64_t d, const rope& r) : rope_(r) {
    detail::check_rope("rope_rotation", r, d);
    const std::int64_t rd = detail::rotary_dims(r, d);
    for (std::int64_t i = 0; i < rd / 2; ++i) {
      const double angle = position * std::pow(r.theta, -2.0 * static_cast<double>(i) / static_cast<double>(rd));
      cos_.push_back(std::cos(angle));
      sin_.push_back(std::sin(angle));
    }
  }

  /// Rotates row (d elements) in place.
  template <class T>
  void apply(T* row) const {
    const std::int64_t half = static_cast<std::int64_t>(cos_.size());
    const bool split = rope_.layout == rope_layout::half_split;
    for (std::int64_t i = 0; i < half; ++i) {
      T& a = split ? row[i] : row[2 * i];
      T& b = split ? row[i + half] : row[2 * i + 1];
      const double x = to_float(a), y = to_float(b);
      a = from_float<T>(static_cast<float>(x * cos_[i] - y * sin_[i]));
      b = from_float<T>(static_cast<float>(x * sin_[i] + y * cos_[i]));
    }
  }

 private:
  rope rope_;
  std::vector<double> cos_, sin_;
};

/// Rotates row (d elements) by the angle of `position` (any real; negative undoes).
template <class T>
void rope_rotate(T* row, std::int64_t d, double position, const rope& r) {
  rope_rotation(position, d, r).apply(row);
}

ATTNKIT_END_NAMESPACE
