// tanh for fp32 lanes (the softcap), built on simd::exp:
//   |x| <  0.25: x (1 - x^2/3 + 2x^4/15 - 17x^6/315 + 62x^8/2835)  (next term < 3e-9)
//   |x| >= 0.25: sign(x) (1 - 2 / (exp(2|x|) + 1))                  (no cancellation there)
// Relative error <= 4e-7 over all floats (tests/backend/test_cpu_simd.cpp).
#pragma once

#include "attnkit/backend/cpu/exp.hpp"
#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/core/config.hpp"

ATTNKIT_SIMD_BEGIN

ATTNKIT_BEGIN_NAMESPACE
namespace simd {

template <class Arch>
ATTNKIT_INLINE fbatch<Arch> tanh(fbatch<Arch> x) {
  using B = fbatch<Arch>;
  const B t = xsimd::abs(x);
  const B x2 = x * x;
  B p(62.0f / 2835.0f);
  p = xsimd::fma(p, x2, B(-17.0f / 315.0f));
  p = xsimd::fma(p, x2, B(2.0f / 15.0f));
  p = xsimd::fma(p, x2, B(-1.0f / 3.0f));
  const B small = xsimd::fma(x * x2, p, x);
  const B big = B(1.0f) - B(2.0f) / (simd::exp<Arch>(t + t) + B(1.0f));
  return xsimd::select(t < B(0.25f), small, xsimd::copysign(big, x));
}

}  // namespace simd
ATTNKIT_END_NAMESPACE

ATTNKIT_SIMD_END
