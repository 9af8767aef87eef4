// The fp64 oracle of linear attention: the recurrence S_t = diag(a_t) S_{t-1}
// + k_t v_tᵀ, o_t = scale S_tᵀ q_t (optionally over scale z_tᵀ q_t + eps),
// token by token in double, from a given initial state.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "attnkit/attention/linear/decay.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/tensor_view.hpp"

namespace attnkit::test {

struct linear_oracle_result {
  std::int64_t b = 0, h = 0, t = 0, K = 0, V = 0;
  std::vector<double> o;  // (b, h, t, V)
  std::vector<double> s;  // (b, h, K, V) final state
  std::vector<double> z;  // (b, h, K) final key sum

  double out(std::int64_t i, std::int64_t j, std::int64_t r, std::int64_t y) const { return o[((i * h + j) * t + r) * V + y]; }
};

/// s0 (b, h, K, V) and z0 (b, h, K) may be empty (zero initial state).
template <class TQ, class TK, class TV>
linear_oracle_result linear_oracle(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
                                   const linear_decay& decay, double scale, bool normalize, double eps,
                                   tensor_view<const float, 4> s0 = {}, tensor_view<const float, 3> z0 = {}) {
  linear_oracle_result r{q.extent(0), q.extent(1), q.extent(2), q.extent(3), v.extent(3), {}, {}, {}};
  r.o.resize(static_cast<std::size_t>(r.b * r.h * r.t * r.V));
  r.s.resize(static_cast<std::size_t>(r.b * r.h * r.K * r.V));
  r.z.resize(static_cast<std::size_t>(r.b * r.h * r.K));
  for (std::int64_t i = 0; i < r.b; ++i)
    for (std::int64_t j = 0; j < r.h; ++j) {
      double* S = &r.s[static_cast<std::size_t>((i * r.h + j) * r.K * r.V)];
      double* z = &r.z[static_cast<std::size_t>((i * r.h + j) * r.K)];
      for (std::int64_t x = 0; x < r.K; ++x) {
        z[x] = z0.empty() ? 0.0 : z0(i, j, x);
        for (std::int64_t y = 0; y < r.V; ++y) S[x * r.V + y] = s0.empty() ? 0.0 : s0(i, j, x, y);
      }
      for (std::int64_t t = 0; t < r.t; ++t) {
        for (std::int64_t x = 0; x < r.K; ++x) {
          const double a = std::exp(static_cast<double>(decay(i, j, t, x))), kx = to_float(k(i, j, t, x));
          for (std::int64_t y = 0; y < r.V; ++y) S[x * r.V + y] = a * S[x * r.V + y] + kx * to_float(v(i, j, t, y));
          z[x] = a * z[x] + kx;
        }
        double den = 0;
        for (std::int64_t x = 0; x < r.K; ++x) den += to_float(q(i, j, t, x)) * z[x];
        for (std::int64_t y = 0; y < r.V; ++y) {
          double num = 0;
          for (std::int64_t x = 0; x < r.K; ++x) num += to_float(q(i, j, t, x)) * S[x * r.V + y];
          r.o[static_cast<std::size_t>(((i * r.h + j) * r.t + t) * r.V + y)] =
              normalize ? scale * num / (scale * den + eps) : scale * num;
        }
      }
    }
  return r;
}

/// ||got - want|| / ||want|| over a flat range; NaN in got gives NaN.
template <class T>
double relative_l2(const T* got, const std::vector<double>& want) {
  double d = 0, n = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    d += std::pow(static_cast<double>(to_float(got[i])) - want[i], 2.0);
    n += want[i] * want[i];
  }
  return n > 0 ? std::sqrt(d / n) : std::sqrt(d);
}

}  // namespace attnkit::test
