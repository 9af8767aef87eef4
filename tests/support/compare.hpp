// Error metrics against the fp64 oracle and the tolerances of DESIGN §7.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "support/reference_attention.hpp"

namespace attnkit::test {

/// worst = max(worst, x), where a NaN x wins (std::max would drop it).
inline void keep_worst(double& worst, double x) {
  if (!(x <= worst)) worst = x;
}

struct error_stats {
  double rel_l2 = 0;   // ||out - ref|| / ||ref||  (0 when both are 0)
  double max_abs = 0;  // max |out - ref|
  double ref_max = 0;  // max |ref|
  bool finite = true;  // no NaN or inf in out

  /// DESIGN §7: relative error <= tol and max-abs <= tol * max|ref|.
  bool within(double tol) const {
    return finite && rel_l2 <= tol && max_abs <= tol * std::max(ref_max, 1e-30);
  }
};

template <class T>
error_stats compare_output(tensor_view<T, 4> out, const reference_result& ref) {
  error_stats e;
  double diff2 = 0, ref2 = 0;
  for (std::int64_t b = 0; b < ref.b; ++b)
    for (std::int64_t h = 0; h < ref.hq; ++h)
      for (std::int64_t i = 0; i < ref.sq; ++i)
        for (std::int64_t c = 0; c < ref.dv; ++c) {
          const double x = to_float(out(b, h, i, c));
          const double r = ref.out(b, h, i, c);
          if (!std::isfinite(x)) e.finite = false;
          diff2 += (x - r) * (x - r);
          ref2 += r * r;
          keep_worst(e.max_abs, std::abs(x - r));
          e.ref_max = std::max(e.ref_max, std::abs(r));
        }
  e.rel_l2 = ref2 > 0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  return e;
}

/// The tolerance for a kernel reading and writing these element types (DESIGN §7).
template <class... T>
constexpr double tolerance_for() {
  if ((std::is_same_v<std::remove_const_t<T>, bfloat16> || ...)) return 1e-2;
  if ((std::is_same_v<std::remove_const_t<T>, half> || ...)) return 2e-3;
  return 1e-5;
}

}  // namespace attnkit::test
