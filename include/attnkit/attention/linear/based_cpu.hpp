// BASED's linear layer on cpu<Arch>, chunkwise without expanding features inside
// a chunk. With φ the Taylor map (feature_maps.hpp) and p(s) = 1 + s + s²/2, one
// chunk of n rows is
//   o   = φ(Q) S,   den = φ(Q)·z          inter: the state carried in      (n, D')(D', V)
//   A   = q kᵀ / sqrt(d)                  intra: a GEMM over d, not D'     (n, d)(d, n)
//   P   = causal(p(A)),  o += P v,  den += Σ_s P                          (n, n)(n, V)
//   S  += φ(K)ᵀ v,  z += Σ φ(K)           the state carried out            (D', n)(n, V)
// S's rows are the Taylor orders, as the map lays them out: row 0 sums v (order
// 0), the next d rows k vᵀ (order 1), the rest (k ⊗ k) vᵀ (order 2). So φ(Q) S is
// Σv + q·(order 1) + (q ⊗ q)·(order 2) with the map's scales, and the state is the
// reference backend's, passing between the two. φ is expanded only for the n rows
// of the chunk, into scratch. One token (decode) is a chunk of one row.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "attnkit/attention/linear/feature_maps.hpp"
#include "attnkit/attention/linear/linear_params.hpp"
#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/backend/cpu/transpose.hpp"
#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// Padded sizes and the scratch of one work item: q, k (C, dp); kt (dp, Cp);
/// fq, fk (C, Dp); v, o (C, Vp); A (C, Cp); S (Dp, Vp); z (Dp); den (C).
template <class Arch>
struct based_plan {
  static constexpr std::int64_t L = simd::lanes<Arch>;
  std::int64_t C = 0, Cp = 0, dp = 0, D = 0, Dp = 0, Vp = 0;

  /// chunk: the rows of the longest chunk a call runs (params.chunk clamped to t).
  based_plan(const char* fn, std::int64_t chunk, std::int64_t d, std::int64_t D_, std::int64_t V) {
    const long double c = static_cast<long double>(chunk) + 16, k = static_cast<long double>(d) + 16,
                      f = static_cast<long double>(D_) + 16, v = static_cast<long double>(V) + 16;  // no int64 sum
    check_scratch_floats(fn, 3 * c * k + 2 * c * f + 3 * c * v + c * c + f * (v + 1) + c);  // slot_floats, unmultiplied
    C = chunk, Cp = round(chunk), dp = round(d), D = D_, Dp = round(D_), Vp = round(V);
  }

  static std::int64_t round(std::int64_t n) { return (n + 15) / 16 * 16; }  // 64-byte rows, lanes of any arch

  std::size_t slot_floats() const {
    return static_cast<std::size_t>(2 * C * dp + dp * Cp + 2 * C * Dp + 2 * C * Vp + C * Cp + Dp * Vp + Dp + round(C));
  }
};

struct based_slot {
  float *q, *k, *kt, *fq, *fk, *v, *o, *a, *s, *z, *den;

  template <class Arch>
  based_slot(float* at, const based_plan<Arch>& p) {
    const auto take = [&](std::int64_t n) { return std::exchange(at, at + n); };  // every n is a multiple of 16
    q = take(p.C * p.dp), k = take(p.C * p.dp), kt = take(p.dp * p.Cp), fq = take(p.C * p.Dp);
    fk = take(p.C * p.Dp), v = take(p.C * p.Vp), o = take(p.C * p.Vp), a = take(p.C * p.Cp);
    s = take(p.Dp * p.Vp), z = take(p.Dp), den = take(p.round(p.C));
  }
};

/// One checked call's arguments and its per-(b, h) chunk loop.
template <class TQ, class TK, class TV, class TO>
struct based_call {
  tensor_view<TQ, 4> q;  // (b, h, t, d)
  tensor_view<TK, 4> k;  // (b, h, t, d)
  tensor_view<TV, 4> v;  // (b, h, t, V)
  tensor_view<TO, 4> o;  // (b, h, t, V)
  const linear_state& state;
  taylor_map map;
  bool normalize;
  float eps;

  template <class Arch>
  void chunkwise(std::int64_t b, std::int64_t h, const based_plan<Arch>& p, const based_slot& w) const {
    using B = simd::fbatch<Arch>;
    constexpr std::int64_t L = simd::lanes<Arch>;
    const std::int64_t d = q.extent(3), V = v.extent(3), t = q.extent(2), dp = p.dp, Dp = p.Dp, Vp = p.Vp, Cp = p.Cp;
    const float inv_sqrt_d = 1.0f / std::sqrt(static_cast<float>(d));
    std::fill(w.s, w.s + Dp * Vp, 0.0f);
    std::fill(w.z, w.z + Dp, 0.0f);
    if (is_given(state.s))
      for (std::int64_t x = 0; x < p.D; ++x) {
        std::copy(&state.s(b, h, x, 0), &state.s(b, h, x, 0) + V, w.s + x * Vp);
        if (is_given(state.z)) w.z[x] = state.z(b, h, x);
      }

    for (std::int64_t t0 = 0; t0 < t; t0 += p.C) {
      const std::int64_t n = std::min(p.C, t - t0);
      for (std::int64_t r = 0; r < n; ++r) {  // rows in fp32 and their features, zeros up to the padding
        simd::widen_row<Arch>(&q(b, h, t0 + r, 0), d, w.q + r * dp, dp);
        simd::widen_row<Arch>(&k(b, h, t0 + r, 0), d, w.k + r * dp, dp);
        simd::widen_row<Arch>(&v(b, h, t0 + r, 0), V, w.v + r * Vp, Vp);
        for (const auto& [x, f] : {std::pair{w.q + r * dp, w.fq + r * Dp}, std::pair{w.k + r * dp, w.fk + r * Dp}}) {
          taylor_row([x = x](std::int64_t i) { return x[i]; }, d, map, f);
          std::fill(f + p.D, f + Dp, 0.0f);
        }
      }

      // Inter: o = φ(Q) S, den = φ(Q)·z.
      simd::gemm_tile<Arch, false>(w.fq, Dp, w.s, Vp, w.o, Vp, n, Vp, Dp);
      for (std::int64_t r = 0; normalize && r < n; ++r) {
        B acc(0.0f);
        for (std::int64_t x = 0; x < Dp; x += L)
          acc = xsimd::fma(simd::load<Arch>(w.fq + r * Dp + x), simd::load<Arch>(w.z + x), acc);
        w.den[r] = simd::reduce_add<Arch>(acc);
      }

      // Intra: P = causal(p(q kᵀ / sqrt(d))), o += P v, den += Σ_s P.
      simd::transpose<Arch>(w.k, dp, n, dp, w.kt, Cp);
      simd::gemm_tile<Arch, false>(w.q, dp, w.kt, Cp, w.a, Cp, n, Cp, dp);
      const B lane = simd::lane_index<Arch>();
      for (std::int64_t r = 0; r < n; ++r) {
        float* ar = w.a + r * Cp;
        B sum(0.0f);
        for (std::int64_t s = 0; s < Cp; s += L) {
          const B sc = simd::load<Arch>(ar + s) * B(inv_sqrt_d);
          const B poly = xsimd::fma(sc, xsimd::fma(sc, B(0.5f), B(1.0f)), B(1.0f));
          const B cols = B(static_cast<float>(s)) + lane;
          const B pr = xsimd::select(cols <= B(static_cast<float>(r)), poly, B(0.0f));  // and kt's stale columns >= n
          simd::store<Arch>(ar + s, pr);
          sum = sum + pr;
        }
        if (normalize) w.den[r] += simd::reduce_add<Arch>(sum);
      }
      simd::gemm_lower_tile<Arch>(w.a, Cp, w.v, Vp, w.o, Vp, n, Vp);  // row r reads v's rows <= r only

      for (std::int64_t r = 0; r < n; ++r) {
        const float f = normalize ? 1.0f / (w.den[r] + eps) : 1.0f;
        TO* out = &o(b, h, t0 + r, 0);
        std::int64_t y = 0;
        if constexpr (std::is_same_v<TO, float>)
          for (; y + L <= V; y += L) simd::store<Arch>(out + y, simd::load<Arch>(w.o + r * Vp + y) * B(f));
        for (; y < V; ++y) out[y] = from_float<TO>(w.o[r * Vp + y] * f);
      }

      // The state carried past the chunk.
      simd::gemm_tile<Arch, true, true>(w.fk, Dp, w.v, Vp, w.s, Vp, Dp, Vp, n);
      for (std::int64_t r = 0; normalize && r < n; ++r)
        for (std::int64_t x = 0; x < Dp; x += L)
          simd::store<Arch>(w.z + x, simd::load<Arch>(w.z + x) + simd::load<Arch>(w.fk + r * Dp + x));
    }
    if (is_given(state.s))
      for (std::int64_t x = 0; x < p.D; ++x) {
        std::copy(w.s + x * Vp, w.s + x * Vp + V, &state.s(b, h, x, 0));
        if (is_given(state.z)) state.z(b, h, x) = w.z[x];
      }
  }
};

}  // namespace detail
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
