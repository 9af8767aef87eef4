// Widening loads: lanes<Arch> consecutive float, half or bfloat16 values into
// one fp32 register. AVX-512 and AVX2 (+F16C) use the hardware conversions;
// other archs widen lane by lane. Widening is exact, so every path gives the
// same bits.
#pragma once

#include <cstdint>

#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"


ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace simd {
namespace detail {

template <class Arch, class T>
ATTNKIT_INLINE fbatch<Arch> widen(const T* p, const xsimd::generic&) {
  alignas(64) float t[lanes<Arch>];
  for (int i = 0; i < lanes<Arch>; ++i) t[i] = to_float(p[i]);
  return fbatch<Arch>::load_aligned(t);
}

#if XSIMD_WITH_AVX512F
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const half* p, const xsimd::avx512f&) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const bfloat16* p, const xsimd::avx512f&) {
  const __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
#endif

#if XSIMD_WITH_AVX2
#if defined(__F16C__)
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const half* p, const xsimd::avx2&) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
#endif
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const bfloat16* p, const xsimd::avx2&) {
  const __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
#endif

}  // namespace detail

/// lanes<Arch> values from p, widened to fp32.
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> load_widen(const float* p) {
  return fbatch<Arch>::load_unaligned(p);
}
template <class Arch, class T>
ATTNKIT_INLINE fbatch<Arch> load_widen(const T* p) {
  return detail::widen<Arch>(p, Arch{});
}

/// dst[0, n) = src[0, n) as fp32, times `scale`, then zeros up to dst[n_pad).
template <class Arch, class T>
void widen_row(const T* src, std::int64_t n, float* dst, std::int64_t n_pad, float scale = 1.0f) {
  constexpr int L = lanes<Arch>;
  const fbatch<Arch> s(scale);
  std::int64_t x = 0;
  for (; x + L <= n; x += L) store<Arch>(dst + x, load_widen<Arch>(src + x) * s);
  for (; x < n; ++x) dst[x] = to_float(src[x]) * scale;
  for (; x < n_pad; ++x) dst[x] = 0.0f;
}

}  // namespace simd
ATTNKIT_END_NAMESPACE

ATTNKIT_SIMD_END
