// The tile verbs of CPU flash attention (and of linear attention's chunks), on
// fp32 tiles in scratch memory:
//   gemm_tile     c (m, n) [+]= a (m, steps) * b (steps, n)            register-blocked
//   qk_tile       s (rows, kv_tile) = q (rows, d) * kt (d, kv_tile)   a gemm_tile
//   pv_tile       acc (rows, dvp) += p (rows, cols) * v (cols, dvp)    a gemm_tile
//   softmax_step  one row of scores folded into its online-softmax state
// A micro-tile keeps mr x nv registers of accumulators live while it streams
// the shared operand once: mr broadcasts and nv loads feed mr*nv FMAs.
#pragma once

#include <cstdint>
#include <limits>
#include <type_traits>

#include "attnkit/backend/cpu/exp.hpp"
#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/softmax_state.hpp"


ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace simd {

template <class Arch>
struct flash_tiling {
  static constexpr int lanes = simd::lanes<Arch>;
  static constexpr int nv = lanes >= 16 ? 4 : 2;  // register columns of a micro-tile (AVX2 has 16 registers)
  static constexpr int mr = 6;                    // rows of a micro-tile
  static constexpr int kv_tile = 128;             // keys per tile; a multiple of nv * lanes
  static constexpr int q_tile = 96;               // query rows per block; a multiple of mr
};

namespace detail {

/// f(r0, integral_constant<int, M>) over row blocks of M = MR rows, then one tail block of fewer.
template <int MR, class F>
ATTNKIT_INLINE void for_row_blocks(std::int64_t rows, F&& f) {
  std::int64_t r = 0;
  for (; r + MR <= rows; r += MR) f(r, std::integral_constant<int, MR>{});
  if constexpr (MR > 1) {
    if (r < rows) {
      const auto tail = [&](auto self, auto m) {
        if constexpr (decltype(m)::value > 0) {
          if (rows - r == decltype(m)::value) return f(r, m);
          self(self, std::integral_constant<int, decltype(m)::value - 1>{});
        }
      };
      tail(tail, std::integral_constant<int, MR - 1>{});
    }
  }
}

/// c (MR, NV * lanes) = [c +] a (MR, steps) * b (steps, NV * lanes). a(r, k) is
/// a[r * lda + k], or a[k * lda + r] when ATransposed; b's rows ldb apart; c is
/// aligned, rows ldc apart. With SkipZeros an a(r, k) == 0 adds nothing, even
/// where b holds inf or NaN (a masked FMA on AVX-512, a blend on AVX2).
template <class Arch, int MR, int NV, bool Accumulate, bool ATransposed = false, bool SkipZeros = false>
ATTNKIT_INLINE void gemm_micro(const float* a, std::int64_t lda, const float* b, std::int64_t ldb, std::int64_t steps, float* c,
                std::int64_t ldc) {
  using B = fbatch<Arch>;
  constexpr int L = lanes<Arch>;
  B acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int x = 0; x < NV; ++x) acc[r][x] = Accumulate ? B::load_aligned(c + r * ldc + x * L) : B(0.0f);
  for (std::int64_t k = 0; k < steps; ++k) {
    B bk[NV];
    for (int x = 0; x < NV; ++x) bk[x] = B::load_unaligned(b + k * ldb + x * L);
    for (int r = 0; r < MR; ++r) {
      const B ak(ATransposed ? a[k * lda + r] : a[r * lda + k]);
      if constexpr (SkipZeros) {
        const auto live = ak != B(0.0f);
        for (int x = 0; x < NV; ++x) acc[r][x] = xsimd::select(live, xsimd::fma(ak, bk[x], acc[r][x]), acc[r][x]);
      } else {
        for (int x = 0; x < NV; ++x) acc[r][x] = xsimd::fma(ak, bk[x], acc[r][x]);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int x = 0; x < NV; ++x) acc[r][x].store_aligned(c + r * ldc + x * L);
}

}  // namespace detail

/// c (m, n) [+]= a (m, steps) * b (steps, n): a(r, k) is a[r * lda + k], or
/// a[k * lda + r] when ATransposed (aᵀ stored row-major); b's rows ldb apart;
/// c 64-byte aligned with rows ldc apart; n a multiple of lanes. SkipZeros: see
/// gemm_micro.
template <class Arch, bool Accumulate, bool ATransposed = false, bool SkipZeros = false>
ATTNKIT_INLINE void gemm_tile(const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float* c, std::int64_t ldc,
               std::int64_t m, std::int64_t n, std::int64_t steps) {
  using T = flash_tiling<Arch>;
  detail::for_row_blocks<T::mr>(m, [&](std::int64_t r0, auto mm) {
    constexpr int M = decltype(mm)::value;
    const float* ar = ATransposed ? a + r0 : a + r0 * lda;
    std::int64_t x = 0;
    for (; x + T::nv * T::lanes <= n; x += T::nv * T::lanes)
      detail::gemm_micro<Arch, M, T::nv, Accumulate, ATransposed, SkipZeros>(ar, lda, b + x, ldb, steps,
                                                                             c + r0 * ldc + x, ldc);
    detail::for_row_blocks<T::nv>((n - x) / T::lanes, [&](std::int64_t c0, auto nn) {
      const std::int64_t col = x + c0 * T::lanes;
      detail::gemm_micro<Arch, M, decltype(nn)::value, Accumulate, ATransposed, SkipZeros>(
          ar, lda, b + col, ldb, steps, c + r0 * ldc + col, ldc);
    });
  });
}

/// s (rows, kv_tile) = q (rows, d) * kt (d, kv_tile). q rows are d floats apart;
/// kt and s are 64-byte aligned with rows kv_tile floats apart.
template <class Arch>
ATTNKIT_INLINE void qk_tile(const float* q, std::int64_t rows, std::int64_t d, const float* kt, float* s) {
  constexpr int kv = flash_tiling<Arch>::kv_tile;
  gemm_tile<Arch, false>(q, d, kt, kv, s, kv, rows, kv, d);
}

/// acc (rows, dvp) += p (rows, cols) * v (cols, dvp). p rows are kv_tile floats
/// apart, v rows ldv; acc is 64-byte aligned and dvp a multiple of lanes. A
/// partially masked tile passes `masked`: then a zero weight adds nothing even
/// against a non-finite value, so a key a row cannot see never reaches it.
template <class Arch>
ATTNKIT_INLINE void pv_tile(const float* p, std::int64_t rows, std::int64_t cols, const float* v, std::int64_t ldv,
                            float* acc, std::int64_t dvp, bool masked = false) {
  constexpr int kv = flash_tiling<Arch>::kv_tile;
  if (masked)
    gemm_tile<Arch, true, false, true>(p, kv, v, ldv, acc, dvp, rows, dvp, cols);
  else
    gemm_tile<Arch, true>(p, kv, v, ldv, acc, dvp, rows, dvp, cols);
}

/// c (m, n) += a (m, m) * b (m, n) with a lower triangular: row r reads b's rows
/// [0, r] only, so later rows of b (later tokens) never reach it, whatever they
/// hold. a's rows lda apart, b's ldb; c aligned, rows ldc apart; n a multiple of lanes.
template <class Arch>
ATTNKIT_INLINE void gemm_lower_tile(const float* a, std::int64_t lda, const float* b, std::int64_t ldb, float* c,
                                    std::int64_t ldc, std::int64_t m, std::int64_t n) {
  using T = flash_tiling<Arch>;
  detail::for_row_blocks<T::mr>(m, [&](std::int64_t r0, auto mm) {
    constexpr int M = decltype(mm)::value;
    // Rows [r0, r0 + M) read b's rows [0, r0) in full, then the M x M diagonal block
    // with its zeros above the diagonal skipped.
    gemm_tile<Arch, true>(a + r0 * lda, lda, b, ldb, c + r0 * ldc, ldc, M, n, r0);
    gemm_tile<Arch, true, false, true>(a + r0 * lda + r0, lda, b + r0 * ldb, ldb, c + r0 * ldc, ldc, M, n, M);
  });
}

/// Folds n scores (a multiple of lanes; -inf for masked ones) into st and replaces
/// them by their weights exp(s - m). Returns the factor by which the row's earlier
/// accumulator must be scaled.
template <class Arch>
ATTNKIT_INLINE float softmax_step(float* s, std::int64_t n, softmax_state& st) {
  using B = fbatch<Arch>;
  constexpr int L = lanes<Arch>;
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  B mx(neg_inf);
  for (std::int64_t c = 0; c < n; c += L) mx = xsimd::max(mx, B::load_aligned(s + c));
  const float alpha = st.rescale(reduce_max<Arch>(mx));
  if (st.m == neg_inf) {  // nothing visible yet: every weight is 0
    for (std::int64_t c = 0; c < n; c += L) B(0.0f).store_aligned(s + c);
    return alpha;
  }
  const B m(st.m);
  B sum(0.0f);
  for (std::int64_t c = 0; c < n; c += L) {
    const B w = simd::exp<Arch>(B::load_aligned(s + c) - m);
    w.store_aligned(s + c);
    sum += w;
  }
  st.l += reduce_add<Arch>(sum);
  return alpha;
}

/// sum[0, n) += weight * exp(s - lse), n a multiple of lanes: scores turned into
/// normalized weights and added up (key_weights.hpp). lse must be finite.
template <class Arch>
ATTNKIT_INLINE void add_weights(const float* s, std::int64_t n, float lse, float weight, float* sum) {
  using B = fbatch<Arch>;
  const B m(lse), w(weight);
  for (std::int64_t c = 0; c < n; c += lanes<Arch>)
    xsimd::fma(w, simd::exp<Arch>(B::load_aligned(s + c) - m), B::load_aligned(sum + c)).store_aligned(sum + c);
}

/// row[0, n) *= alpha, n a multiple of lanes.
template <class Arch>
ATTNKIT_INLINE void scale_row(float* row, std::int64_t n, float alpha) {
  using B = fbatch<Arch>;
  const B a(alpha);
  for (std::int64_t x = 0; x < n; x += lanes<Arch>) (B::load_aligned(row + x) * a).store_aligned(row + x);
}

}  // namespace simd
ATTNKIT_END_NAMESPACE

ATTNKIT_SIMD_END
