// exp for fp32 lanes, accurate enough for an fp32-exact softmax.
//
//   exp(x) = 2^n * exp(r),  n = round(x / ln 2),  r = x - n ln 2 in [-ln2/2, ln2/2]
//
// n comes from the round-to-nearest of a magic-number add, r from a two-part
// (Cody-Waite) ln 2 so the subtraction is exact, and exp(r) from its degree-7
// Taylor polynomial (truncation error below 3e-9 on that interval) in Horner
// form with FMAs. 2^n is built directly in the exponent bits.
//
// Error contract, checked by tests/backend/test_cpu_simd.cpp over every 61st
// float of the range (max seen: 7.7e-8): relative error <= 1.2e-7 (1 ulp) for x
// in [exp_min_arg, exp_max_arg], which covers the softmax's x <= 0 down to FLT_MIN.
// Below exp_min_arg the result is 0 (the true value is below FLT_MIN), above
// exp_max_arg it is +inf, -inf gives 0 and NaN stays NaN.
#pragma once

#include <cstdint>
#include <limits>

#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/core/config.hpp"


ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace simd {

inline constexpr float exp_min_arg = -87.33654f;  // ln(FLT_MIN)
inline constexpr float exp_max_arg = 88.37626f;   // 127.5 ln 2: 2^n stays a normal float

template <class Arch>
ATTNKIT_INLINE fbatch<Arch> exp(fbatch<Arch> x) {
  using B = fbatch<Arch>;
  using I = xsimd::batch<std::int32_t, compiled_arch<Arch>>;
  const B magic(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits
  const B t = xsimd::fma(x, B(1.44269504088896341f), magic);
  const B n = t - magic;
  B r = xsimd::fnma(n, B(0.693145751953125f), x);  // ln 2 high part: n * it is exact
  r = xsimd::fnma(n, B(1.428606765330187e-06f), r);  // ln 2 low part
  B p(1.0f / 5040.0f);
  p = xsimd::fma(p, r, B(1.0f / 720.0f));
  p = xsimd::fma(p, r, B(1.0f / 120.0f));
  p = xsimd::fma(p, r, B(1.0f / 24.0f));
  p = xsimd::fma(p, r, B(1.0f / 6.0f));
  p = xsimd::fma(p, r, B(0.5f));
  p = xsimd::fma(p, r, B(1.0f));
  p = xsimd::fma(p, r, B(1.0f));
  // n sits in the low bits of t, offset by magic's bit pattern (0x4b400000); rebias and shift to the exponent.
  const I bits = (xsimd::bitwise_cast<I>(t) - I(0x4b400000 - 127)) << 23;
  B y = p * xsimd::bitwise_cast<B>(bits);
  y = xsimd::select(x < B(exp_min_arg), B(0.0f), y);
  return xsimd::select(x > B(exp_max_arg), B(std::numeric_limits<float>::infinity()), y);
}

}  // namespace simd
ATTNKIT_END_NAMESPACE

ATTNKIT_SIMD_END
