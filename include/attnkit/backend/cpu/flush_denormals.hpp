// flush_denormals: while alive, this thread's SSE/AVX arithmetic flushes
// subnormal results and inputs to zero (MXCSR FTZ and DAZ); the caller's mode
// comes back on destruction. Decays such as e^{-7 (r - s)} reach the subnormal
// range, where x86 FMAs are many times slower; values that small (< 1.2e-38)
// cannot change an fp32 result that holds any normal term.
#pragma once

#if defined(__SSE__) || defined(_M_X64)
#include <xmmintrin.h>

#include "attnkit/core/config.hpp"
#endif

ATTNKIT_BEGIN_NAMESPACE
namespace simd {

class flush_denormals {
 public:
#if defined(__SSE__) || defined(_M_X64)
  flush_denormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | ftz | daz); }
  ~flush_denormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned ftz = 0x8000, daz = 0x0040;
  unsigned saved_;
#endif
  flush_denormals(const flush_denormals&) = delete;
  flush_denormals& operator=(const flush_denormals&) = delete;
};

}  // namespace simd
ATTNKIT_END_NAMESPACE
