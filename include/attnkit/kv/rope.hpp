// Rotary position embedding (RoPE): of one row, for re-rotating cached keys
// when compaction moves them to new positions, and of a whole (b, h, s, d)
// view at given positions from a table of cos and sin computed once.
//
// Pair i of the rotary dims (i < rotary_dim / 2) turns by position * theta^(-2i / rotary_dim):
//   half_split  : pairs (x[i], x[i + rotary_dim/2])   (Llama, GPT-NeoX)
//   interleaved : pairs (x[2i], x[2i + 1])            (GPT-J, the original RoPE)
// Dims past rotary_dim are left alone. Rotations compose: rotating by a then
// by b equals rotating by a + b, so a key cached at position p moves to p' by
// rotating it by p' - p.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/view_checks.hpp"

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

namespace detail {

/// Turns the pairs of row by the angles whose cos and sin are c and s (one per pair), in double.
template <class T>
void rotate_pairs(T* row, const double* c, const double* s, std::int64_t half, rope_layout layout) {
  const auto turn = [&](T& a, T& b, std::int64_t i) {
    const double x = to_float(a), y = to_float(b);
    a = from_float<T>(static_cast<float>(x * c[i] - y * s[i]));
    b = from_float<T>(static_cast<float>(x * s[i] + y * c[i]));
  };
  if (layout == rope_layout::half_split)  // one loop per layout, so each runs without a branch
    for (std::int64_t i = 0; i < half; ++i) turn(row[i], row[i + half], i);
  else
    for (std::int64_t i = 0; i < half; ++i) turn(row[2 * i], row[2 * i + 1], i);
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

  void cos_sin(double* c, double* s) const {
    std::copy(cos_.begin(), cos_.end(), c);
    std::copy(sin_.begin(), sin_.end(), s);
  }

  /// Rotates row (d elements) in place.
  template <class T>
  void apply(T* row) const {
    detail::rotate_pairs(row, cos_.data(), sin_.data(), static_cast<std::int64_t>(cos_.size()), rope_.layout);
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

/// cos and sin of every pair's angle at positions [0, positions), computed once
/// (in double, 16 bytes per pair and position), for rotating whole batches of
/// q or k rows: apply gives the bits rope_rotate gives each row.
class rope_table {
 public:
  rope_table(std::int64_t positions, std::int64_t d, const rope& r) : rope_(r), d_(d), positions_(positions) {
    detail::check_rope("rope_table", r, d);
    ATTNKIT_CHECK(positions >= 0 && positions <= (std::int64_t{1} << 31), "rope_table: positions must be in [0, 2^31], got ",
                  positions);
    half_ = detail::rotary_dims(r, d) / 2;
    cos_.resize(static_cast<std::size_t>(positions * half_));
    sin_.resize(cos_.size());
    for (std::int64_t p = 0; p < positions; ++p) {
      const rope_rotation one(static_cast<double>(p), d, r);
      one.cos_sin(&cos_[p * half_], &sin_[p * half_]);
    }
  }

  /// Rotates row s of head h of sequence b of x by the angle of position
  /// pos(b, h or 0, s); positions (b, 1 or h, s) are in [0, positions).
  template <class T>
  void apply(tensor_view<T, 4> x,  // (b, h, s, d)
             tensor_view<const std::int64_t, 3> pos) const {
    constexpr const char* fn = "rope_table::apply";
    detail::check_view(fn, "x", x, true);
    detail::check_view(fn, "pos", pos, false);
    ATTNKIT_CHECK(x.extent(3) == d_, fn, ": x.extent(3) must be d = ", d_, ", got ", x.extent(3));
    ATTNKIT_CHECK(pos.extent(0) == x.extent(0) && (pos.extent(1) == 1 || pos.extent(1) == x.extent(1)) &&
                      pos.extent(2) == x.extent(2),
                  fn, ": pos must be (b, 1 or h, s) = (", x.extent(0), ", 1 or ", x.extent(1), ", ", x.extent(2), ")");
    for (std::int64_t b = 0; b < pos.extent(0); ++b)
      for (std::int64_t h = 0; h < pos.extent(1); ++h)
        for (std::int64_t i = 0; i < pos.extent(2); ++i)
          ATTNKIT_CHECK(pos(b, h, i) >= 0 && pos(b, h, i) < positions_, fn, ": pos(", b, ", ", h, ", ", i, ") = ",
                        pos(b, h, i), " is outside the table's [0, ", positions_, ")");
    for (std::int64_t b = 0; b < x.extent(0); ++b)
      for (std::int64_t h = 0; h < x.extent(1); ++h)
        for (std::int64_t i = 0; i < x.extent(2); ++i) {
          const std::int64_t p = pos(b, pos.extent(1) == 1 ? 0 : h, i);
          detail::rotate_pairs(&x(b, h, i, 0), &cos_[p * half_], &sin_[p * half_], half_, rope_.layout);
        }
  }

 private:
  rope rope_;
  std::int64_t d_, positions_, half_ = 0;
  std::vector<double> cos_, sin_;  // (positions, half)
};

ATTNKIT_END_NAMESPACE
