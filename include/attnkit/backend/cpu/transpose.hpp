// Transposing fp32 tiles in scratch memory (keys into the (d, keys) panels a
// gemm_tile streams). With AVX-512 a 16 x 16 block moves through registers in
// four shuffle stages, 64 shuffles for 256 floats; other archs and the edges of
// a tile go element by element.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/core/config.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace simd {

namespace detail {

#if XSIMD_WITH_AVX512F
/// dst (16, ldd) = src (16, lds)ᵀ for one full 16 x 16 block.
inline void transpose_16x16(const float* src, std::int64_t lds, float* dst, std::int64_t ldd) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {  // pairs of rows, 32-bit interleave within each 128-bit lane
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // 64-bit interleave: r[i + c] lane L holds rows i..i+3 of column 4L + c
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int c = 0; c < 4; ++c) {  // a 4 x 4 transpose of 128-bit lanes gathers column 4L + c
    const __m512 x0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), x1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
    const __m512 y0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
    const __m512 y1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
    _mm512_storeu_ps(dst + c * ldd, _mm512_shuffle_f32x4(x0, y0, 0x88));
    _mm512_storeu_ps(dst + (4 + c) * ldd, _mm512_shuffle_f32x4(x0, y0, 0xDD));
    _mm512_storeu_ps(dst + (8 + c) * ldd, _mm512_shuffle_f32x4(x1, y1, 0x88));
    _mm512_storeu_ps(dst + (12 + c) * ldd, _mm512_shuffle_f32x4(x1, y1, 0xDD));
  }
}
#endif

}  // namespace detail

/// dst (cols, ldd) = src (rows, cols)ᵀ, src rows lds apart; in 16 x 16 blocks so
/// both sides stay within a few cache lines.
template <class Arch>
void transpose(const float* src, std::int64_t lds, std::int64_t rows, std::int64_t cols, float* dst,
               std::int64_t ldd) {
  constexpr std::int64_t tile = 16;
  for (std::int64_t r0 = 0; r0 < rows; r0 += tile)
    for (std::int64_t c0 = 0; c0 < cols; c0 += tile) {
#if XSIMD_WITH_AVX512F
      if constexpr (std::is_base_of_v<xsimd::avx512f, Arch>) {
        if (r0 + tile <= rows && c0 + tile <= cols) {
          detail::transpose_16x16(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd);
          continue;
        }
      }
#endif
      for (std::int64_t c = c0; c < std::min(cols, c0 + tile); ++c)
        for (std::int64_t r = r0; r < std::min(rows, r0 + tile); ++r) dst[c * ldd + r] = src[r * lds + c];
    }
}

}  // namespace simd
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
