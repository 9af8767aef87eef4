// Widening loads: lanes<Arch> consecutive float, half, bfloat16, int8, fp8
// e4m3 or fp8 e5m2 values into one fp32 register. AVX-512 and AVX2 (+F16C) use
// the hardware conversions (fp8 goes through binary16: e5m2 is its top byte,
// e4m3 shifts into it exactly); other archs widen lane by lane. Widening is
// exact, so every path gives the same bits.
#pragma once

#include <cstdint>
#include <limits>

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

// e4m3's NaN (S.1111.111) lands on ±480 in binary16, a value e4m3 cannot hold
// (its largest is 448): those lanes become NaN.
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> e4m3_nan(fbatch<Arch> x) {
  return xsimd::select(xsimd::abs(x) == fbatch<Arch>(480.0f),
                       fbatch<Arch>(std::numeric_limits<float>::quiet_NaN()), x);
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

#if XSIMD_WITH_AVX512F
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const std::int8_t* p, const xsimd::avx512f&) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const fp8_e5m2* p, const xsimd::avx512f&) {
  const __m256i u = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm512_cvtph_ps(_mm256_slli_epi16(u, 8));
}
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const fp8_e4m3* p, const xsimd::avx512f&) {
  // Sign-extended to 16 bits and shifted by 7, the sign lands on bit 15 and a
  // copy of it on bit 14, which the mask clears: S0EEEEMMM0000000.
  const __m256i s = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __m256i h = _mm256_and_si256(_mm256_slli_epi16(s, 7), _mm256_set1_epi16(static_cast<short>(0xbf80)));
  return e4m3_nan<Arch>(fbatch<Arch>(_mm512_cvtph_ps(h)) * fbatch<Arch>(256.0f));
}
#endif

#if XSIMD_WITH_AVX2
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const std::int8_t* p, const xsimd::avx2&) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
#if defined(__F16C__)
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const fp8_e5m2* p, const xsimd::avx2&) {
  const __m128i u = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
  return _mm256_cvtph_ps(_mm_slli_epi16(u, 8));
}
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> widen(const fp8_e4m3* p, const xsimd::avx2&) {
  const __m128i s = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));  // as for AVX-512
  const __m128i h = _mm_and_si128(_mm_slli_epi16(s, 7), _mm_set1_epi16(static_cast<short>(0xbf80)));
  return e4m3_nan<Arch>(fbatch<Arch>(_mm256_cvtph_ps(h)) * fbatch<Arch>(256.0f));
}
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

/// dst[0, n) = src[0, n) as fp32, times `scale` (a quantized row's scale), then zeros up to dst[n_pad).
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
