// BASED's feature map: the 2nd-order Taylor expansion of exp, so that
//   φ(q)·φ(k) = 1 + s + s²/2,   s = q·k / sqrt(d).
// Two layouts with the same inner product:
//   full       [1, x / d^(1/4), vec(x xᵀ) / (sqrt(2) sqrt(d))]            1 + d + d² features
//   symmetric  [1, x / d^(1/4), x_i² / (sqrt(2) sqrt(d)) (i), x_i x_j / sqrt(d) (i < j)]
//                                                                         1 + d + d(d+1)/2 features
// The symmetric map keeps the upper triangle of x xᵀ (44% less state at d = 16).
#pragma once

#include <cmath>
#include <cstdint>

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

enum class taylor_map { full, symmetric };

/// Features of a d-dimensional input under `map`.
inline std::int64_t taylor_features(taylor_map map, std::int64_t d) {
  return map == taylor_map::full ? 1 + d + d * d : 1 + d + d * (d + 1) / 2;
}

/// f[0, taylor_features(map, d)) = φ(x) for one row, x(i) giving its i-th value as float.
template <class Row>
void taylor_row(Row x, std::int64_t d, taylor_map map, float* f) {
  const float lin = 1.0f / std::sqrt(std::sqrt(static_cast<float>(d)));  // d^(-1/4)
  const float sq = 1.0f / std::sqrt(static_cast<float>(d));              // d^(-1/2)
  const float diag = sq / std::sqrt(2.0f);
  std::int64_t n = 0;
  f[n++] = 1.0f;
  for (std::int64_t i = 0; i < d; ++i) f[n++] = x(i) * lin;
  for (std::int64_t i = 0; i < d; ++i) {
    const float xi = x(i);
    if (map == taylor_map::full) {
      for (std::int64_t j = 0; j < d; ++j) f[n++] = xi * x(j) * diag;
    } else {
      f[n++] = xi * xi * diag;
      for (std::int64_t j = i + 1; j < d; ++j) f[n++] = xi * x(j) * sq;
    }
  }
}

/// out (b, h, t, taylor_features(map, d)) = φ(x) for every row of x (b, h, t, d).
template <class T>
void taylor_feature_map(tensor_view<T, 4> x, tensor_view<float, 4> out, taylor_map map) {
  const std::int64_t d = x.extent(3), D = taylor_features(map, d);
  for (std::size_t r = 0; r < 3; ++r)
    ATTNKIT_CHECK(out.extent(r) == x.extent(r), "taylor_feature_map: out.extent(", r, ") must equal x.extent(", r,
                  ") = ", x.extent(r), ", got ", out.extent(r));
  ATTNKIT_CHECK(out.extent(3) == D, "taylor_feature_map: out.extent(3) must be ", D, " features for d = ", d,
                ", got ", out.extent(3));
  ATTNKIT_CHECK(out.stride(3) == 1, "taylor_feature_map: out.stride(3) must be 1, got ", out.stride(3));
  for (std::int64_t b = 0; b < x.extent(0); ++b)
    for (std::int64_t h = 0; h < x.extent(1); ++h)
      for (std::int64_t t = 0; t < x.extent(2); ++t)
        taylor_row([&](std::int64_t i) { return to_float(x(b, h, t, i)); }, d, map, &out(b, h, t, 0));
}

ATTNKIT_END_NAMESPACE
