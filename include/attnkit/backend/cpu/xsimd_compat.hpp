// The few xsimd operations the CPU kernels use, spelled so that both Debian's
// xsimd 8.1 and xsimd >= 9 compile them: member loads only (8.1's free
// load_unaligned<Arch> does not forward the arch), hadd vs reduce_add, and a
// reduce_max that 8.1 lacks.
#pragma once

#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "attnkit/backend/cpu/arch.hpp"
#include "attnkit/core/config.hpp"

// GCC 12 reports the don't-care operands (_mm512_undefined_*) of AVX-512
// intrinsics as (maybe-)uninitialized once they are inlined into a kernel
// (GCC PR105593). Every header that holds SIMD code wraps itself in these.
#if defined(__GNUC__) && !defined(__clang__)
#define ATTNKIT_SIMD_BEGIN                                \
  _Pragma("GCC diagnostic push")                          \
  _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") \
  _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define ATTNKIT_SIMD_END _Pragma("GCC diagnostic pop")
#else
#define ATTNKIT_SIMD_BEGIN
#define ATTNKIT_SIMD_END
#endif


ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace simd {

/// Arch's xsimd arch when the translation unit is compiled for it. Otherwise
/// cpu<Arch> has already failed its static_assert (backend/tags.hpp), and the
/// kernels compile on the default arch instead, so that assert is the only error shown.
template <class Arch>
using compiled_arch = std::conditional_t<Arch::supported(), simd_arch_t<Arch>, xsimd::default_arch>;

template <class Arch>
using fbatch = xsimd::batch<float, compiled_arch<Arch>>;

/// floats per register of Arch.
template <class Arch>
inline constexpr int lanes = static_cast<int>(fbatch<Arch>::size);

template <class Arch>
ATTNKIT_INLINE fbatch<Arch> load(const float* p) {
  return fbatch<Arch>::load_unaligned(p);
}

template <class Arch>
ATTNKIT_INLINE void store(float* p, fbatch<Arch> x) {
  x.store_unaligned(p);
}

/// Lane i holds i: column offsets within a register, for masks and distances.
template <class Arch>
fbatch<Arch> lane_index() {
  alignas(64) float i[lanes<Arch>];
  for (int c = 0; c < lanes<Arch>; ++c) i[c] = static_cast<float>(c);
  return fbatch<Arch>::load_aligned(i);
}

namespace detail {

template <class Arch>
ATTNKIT_INLINE float reduce_add(fbatch<Arch> x, const xsimd::generic&) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(x);
#else
  return xsimd::hadd(x);
#endif
}

template <class Arch>
ATTNKIT_INLINE float reduce_max(fbatch<Arch> x, const xsimd::generic&) {
  alignas(64) float t[lanes<Arch>];
  x.store_aligned(t);
  float m = t[0];
  for (int i = 1; i < lanes<Arch>; ++i) m = t[i] > m ? t[i] : m;
  return m;
}

#if XSIMD_WITH_AVX512F
template <class Arch>
ATTNKIT_INLINE float reduce_add(fbatch<Arch> x, const xsimd::avx512f&) {
  return _mm512_reduce_add_ps(x);
}
template <class Arch>
ATTNKIT_INLINE float reduce_max(fbatch<Arch> x, const xsimd::avx512f&) {
  return _mm512_reduce_max_ps(x);
}
#endif

}  // namespace detail

template <class Arch>
ATTNKIT_INLINE float reduce_add(fbatch<Arch> x) {
  return detail::reduce_add<Arch>(x, Arch{});
}

template <class Arch>
ATTNKIT_INLINE float reduce_max(fbatch<Arch> x) {
  return detail::reduce_max<Arch>(x, Arch{});
}

namespace detail {

template <class Arch>
ATTNKIT_INLINE fbatch<Arch> transpose_sum(const fbatch<Arch>* rows, const xsimd::generic&) {
  return xsimd::haddp(rows);
}

#if XSIMD_WITH_AVX512F
// xsimd 8.1's AVX-512 haddp returns its lanes permuted, hence this tree: pairs of
// rows fold within 128-bit lanes (unpack, shuffle), then across them (shuffle_f32x4).
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> transpose_sum(const fbatch<Arch>* rows, const xsimd::avx512f&) {
  __m512 pairs[8], quads[4];
  for (int k = 0; k < 8; ++k) {
    const __m512 x = rows[2 * k], y = rows[2 * k + 1];
    pairs[k] = _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
  }
  for (int k = 0; k < 4; ++k) {
    const __m512 x = pairs[2 * k], y = pairs[2 * k + 1];
    quads[k] = _mm512_add_ps(_mm512_shuffle_ps(x, y, 0x44), _mm512_shuffle_ps(x, y, 0xEE));
  }
  const __m512 a = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x88),
                                 _mm512_shuffle_f32x4(quads[0], quads[1], 0xDD));
  const __m512 b = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x88),
                                 _mm512_shuffle_f32x4(quads[2], quads[3], 0xDD));
  return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
}
#endif

}  // namespace detail

/// Lane i of the result is the sum of the lanes of rows[i] (lanes<Arch> rows).
template <class Arch>
ATTNKIT_INLINE fbatch<Arch> transpose_sum(const fbatch<Arch>* rows) {
  return detail::transpose_sum<Arch>(rows, Arch{});
}

}  // namespace simd
ATTNKIT_END_NAMESPACE

ATTNKIT_SIMD_END
