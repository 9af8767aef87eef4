// The bf16 pair verbs of avx512bf16: vdpbf16ps multiplies, in each of 16 fp32
// lanes, two pairs of bf16 and adds both (exact) products to the lane's sum,
// twice the work of one fp32 FMA per instruction.
//
// Operands are "pair rows": 32-bit words that each hold two bf16, the even
// element in the low half.
//   dot2_tile    c (m, n) [+]= a (m, 2 * steps) * b (2 * steps, n), a's rows
//                pair rows, b's row k the pairs (b(2k, col), b(2k+1, col))
//   round_pairs  an fp32 row rounded to bf16 in place (round to nearest even)
// Only a translation unit compiled with -mavx512bf16 sees them.
#pragma once

#include <cstdint>

#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"

#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#define ATTNKIT_HAS_BF16_DOT 1
#include <immintrin.h>
#else
#define ATTNKIT_HAS_BF16_DOT 0
#endif

#if ATTNKIT_HAS_BF16_DOT
ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace simd {
namespace detail {

ATTNKIT_INLINE __m512bh as_pairs(__m512i x) { return (__m512bh)x; }  // the same 64 bytes

/// c (MR, NV * 16) = [c +] a (MR, 2 * steps) * b: scale * the sums when not
/// Accumulate. SkipZeros: each product is taken in fp32 and one whose a element
/// is 0 adds nothing, even where b holds inf or NaN (what a masked tile needs:
/// the pair instruction would add 0 * NaN).
template <int MR, int NV, bool Accumulate, bool SkipZeros>
ATTNKIT_INLINE void dot2_micro(const std::uint32_t* a, std::int64_t lda, const std::uint32_t* b, std::int64_t ldb,
                               std::int64_t steps, float* c, std::int64_t ldc, float scale) {
  __m512 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int x = 0; x < NV; ++x) acc[r][x] = Accumulate ? _mm512_load_ps(c + r * ldc + x * 16) : _mm512_setzero_ps();
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xffff0000u));
  for (std::int64_t k = 0; k < steps; ++k) {
    __m512i bk[NV];
    for (int x = 0; x < NV; ++x) bk[x] = _mm512_loadu_si512(b + k * ldb + x * 16);
    for (int r = 0; r < MR; ++r) {
      const std::uint32_t w = a[r * lda + k];
      if constexpr (SkipZeros) {
        if (w == 0) continue;
        const __m512 even(_mm512_set1_ps(attnkit::detail::bf16_bits_to_float(static_cast<std::uint16_t>(w & 0xffffu))));
        const __m512 odd(_mm512_set1_ps(attnkit::detail::bf16_bits_to_float(static_cast<std::uint16_t>(w >> 16))));
        const bool use_even = (w & 0x7fffu) != 0, use_odd = (w & 0x7fff0000u) != 0;
        for (int x = 0; x < NV; ++x) {
          if (use_even) acc[r][x] = _mm512_fmadd_ps(even, _mm512_castsi512_ps(_mm512_slli_epi32(bk[x], 16)), acc[r][x]);
          if (use_odd) acc[r][x] = _mm512_fmadd_ps(odd, _mm512_castsi512_ps(_mm512_and_si512(bk[x], high)), acc[r][x]);
        }
      } else {
        const __m512bh ar = as_pairs(_mm512_set1_epi32(static_cast<int>(w)));
        for (int x = 0; x < NV; ++x) acc[r][x] = _mm512_dpbf16_ps(acc[r][x], ar, as_pairs(bk[x]));
      }
    }
  }
  const __m512 s = _mm512_set1_ps(scale);
  for (int r = 0; r < MR; ++r)
    for (int x = 0; x < NV; ++x) _mm512_store_ps(c + r * ldc + x * 16, Accumulate ? acc[r][x] : _mm512_mul_ps(acc[r][x], s));
}

}  // namespace detail

/// c (m, n) [+]= a (m, 2 * steps) * b (2 * steps, n) on pair rows: a's rows lda
/// words apart, b's pair rows ldb words apart; c 64-byte aligned, rows ldc
/// apart, n a multiple of 16. Not Accumulate: c = scale * a * b. SkipZeros: see dot2_micro.
template <bool Accumulate, bool SkipZeros = false>
ATTNKIT_INLINE void dot2_tile(const std::uint32_t* a, std::int64_t lda, const std::uint32_t* b, std::int64_t ldb,
                              float* c, std::int64_t ldc, std::int64_t m, std::int64_t n, std::int64_t steps,
                              float scale = 1.0f) {
  constexpr int MR = 6, NV = 4;  // 24 accumulators, 4 loads and a broadcast: 29 of 32 registers
  detail::for_row_blocks<MR>(m, [&](std::int64_t r0, auto mm) {
    constexpr int M = decltype(mm)::value;
    std::int64_t x = 0;
    for (; x + NV * 16 <= n; x += NV * 16)
      detail::dot2_micro<M, NV, Accumulate, SkipZeros>(a + r0 * lda, lda, b + x, ldb, steps, c + r0 * ldc + x, ldc, scale);
    detail::for_row_blocks<NV>((n - x) / 16, [&](std::int64_t c0, auto nn) {
      const std::int64_t col = x + c0 * 16;
      detail::dot2_micro<M, decltype(nn)::value, Accumulate, SkipZeros>(a + r0 * lda, lda, b + col, ldb, steps,
                                                                       c + r0 * ldc + col, ldc, scale);
    });
  });
}

/// row[0, n) (fp32, 64-byte aligned, n a multiple of 32) rounded to bf16 and
/// written over its own first 2n bytes as n / 2 pair words.
ATTNKIT_INLINE void round_pairs(float* row, std::int64_t n) {
  for (std::int64_t c = 0; c < n; c += 32) {
    const __m512bh p = _mm512_cvtne2ps_pbh(_mm512_load_ps(row + c + 16), _mm512_load_ps(row + c));
    _mm512_store_si512(reinterpret_cast<std::uint16_t*>(row) + c, (__m512i)p);
  }
}

}  // namespace simd
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
#endif
