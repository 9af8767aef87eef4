// linear_attention on cpu<Arch>: the chunkwise form of linear.hpp as small
// register-blocked GEMMs over the fp32 tiles of one chunk, and a fused decode
// step. Work items are (b, h) pairs; each runs its chunks in order.
//
// One chunk of n <= C rows, with K and V padded to lanes (Kp, Vp):
//   qd = q ⊙ e^{into}                       queries decayed from the chunk start
//   o  = qd · S                             inter: the state carried in     (n, Kp)(Kp, Vp)
//   A  = causal(q kᵀ ⊙ Γ)                   intra, Γ_rs = e^{Σ_{s<u<=r} g_u} (n, Kp)(Kp, n)
//   o += A · v                                                              (n, n)(n, Vp)
//   S  = e^{γ} ⊙ S + (k ⊙ e^{past})ᵀ · v    the state carried out           (Kp, n)(n, Vp)
// into, past and γ are prefix, suffix and whole-chunk sums of the log decay, so
// their exponents are <= 0. With a scalar decay, Γ scales A after one GEMM,
// its exponents summed over each segment (intra_scalar).
// With a per-channel decay (GLA), Γ differs per channel. While the chunk's
// decay stays above e^-40 it factors, A = (q ⊙ e^{into}) (k ⊙ e^{-into})ᵀ, one
// GEMM. Stronger decay builds A from sub-blocks of 16 rows (secondary
// chunking): for sub-blocks i > j the decay splits into three segments,
// A_ij = (q_i ⊙ e^{P}) diag(e^{G}) (k_j ⊙ e^{S})ᵀ with P, G, S all <= 0, a GEMM;
// within a sub-block each pair takes its own per-channel exponent of a 16-row
// local sum (or the same factoring, when the sub-block's decay allows it). A
// chunk holding a reset gate (-inf, or any gate below gate_floor) computes Γ as
// explicit segment sums, which stay exact across it. The intra product reads,
// for row r, the values of rows <= r only (gemm_lower_tile): a later token never
// reaches an earlier one, whatever it holds.
//
// Decode (one token) updates the caller's state in place, row by row: each row
// of S is read once, decayed, given k_x v, written back and folded into the
// output while still in registers, so a step moves 8 K V bytes per head.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "attnkit/attention/linear/decay.hpp"
#include "attnkit/attention/linear/linear_params.hpp"
#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/exp.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/backend/cpu/flush_denormals.hpp"
#include "attnkit/backend/cpu/prefetch.hpp"
#include "attnkit/backend/cpu/transpose.hpp"
#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE

namespace detail {

/// Padded sizes and scratch layout of the chunkwise kernel.
template <class Arch>
struct linear_plan {
  static constexpr std::int64_t L = simd::lanes<Arch>;
  static constexpr std::int64_t sub = 16;  // GLA sub-block rows, a multiple of lanes
  std::int64_t C = 0, Cp = 0, Kp = 0, Vp = 0;
  std::int64_t Kr = 0;  // floats per row of the (C, Kp) arrays: at least L, so a scalar decay's
                        // one float per row, and intra_scalar's exponent row, fit even when K = 0

  /// chunk: the rows of the longest chunk a call runs (params.chunk clamped to t).
  linear_plan(const char* fn, std::int64_t chunk, std::int64_t K, std::int64_t V) {
    const long double c = static_cast<long double>(chunk) + sub, k = static_cast<long double>(K) + L,
                      v = static_cast<long double>(V) + L;  // chunk may be INT64_MAX: add in long double
    check_scratch_floats(fn, 11 * c * k + 3 * c * (c + v) + k * (v + 3) + 512);  // slot_floats, before it multiplies
    C = chunk, Cp = round(chunk, sub), Kp = round(K, L), Vp = round(V, L), Kr = std::max(Kp, L);
  }

  static std::int64_t round(std::int64_t n, std::int64_t m) { return (n + m - 1) / m * m; }

  /// Floats of one slot: q, qd, k, kd, kh, g, into, past, P, Ssuf (C, Kr); kt (Kp, Cp);
  /// v, o (C, Vp); A (C, Cp); S (Kp, Vp); z, G, keep (Kp); den (C). A multiple of 16,
  /// so every slot starts 64-byte aligned.
  std::size_t slot_floats() const {
    const std::int64_t n = 10 * C * Kr + Kp * Cp + 2 * C * Vp + C * Cp + Kp * Vp + 3 * Kp + C + 19 * 16;
    return static_cast<std::size_t>(round(n, 16));  // 19 * 16: each array rounded up to 16 floats
  }
};

template <class Arch>
struct linear_slot {
  float *q, *qd, *k, *kd, *kh, *g, *into, *past, *P, *Ssuf, *kt, *v, *o, *a, *s, *z, *G, *keep, *den;

  linear_slot(float* base, const linear_plan<Arch>& p) {
    float* at = base;
    const auto take = [&](std::int64_t n) {
      float* r = at;
      at += (n + 15) / 16 * 16;  // keeps every array 64-byte aligned
      return r;
    };
    for (float** x : {&q, &qd, &k, &kd, &kh, &g, &into, &past, &P, &Ssuf}) *x = take(p.C * p.Kr);
    kt = take(p.Kp * p.Cp), v = take(p.C * p.Vp), o = take(p.C * p.Vp), a = take(p.C * p.Cp);
    s = take(p.Kp * p.Vp), z = take(p.Kp), G = take(p.Kp), keep = take(p.Kp), den = take(p.C);
  }
};

/// One checked call: its arguments and the per-(b, h) kernels that read them.
template <class TQ, class TK, class TV, class TO>
struct linear_call {
  tensor_view<TQ, 4> q;  // (b, h, t, K)
  tensor_view<TK, 4> k;  // (b, h, t, K)
  tensor_view<TV, 4> v;  // (b, h, t, V)
  tensor_view<TO, 4> o;  // (b, h, t, V)
  const linear_decay& decay;
  const linear_state& state;
  linear_shape sh;
  bool normalize;
  float eps;

  /// The chunkwise form for (b, h): its chunks in order, the state kept in scratch.
  template <class Arch>
  void chunkwise(std::int64_t b, std::int64_t h, const linear_plan<Arch>& p, linear_slot<Arch>& w) const;
  // The steps of one chunk of n rows starting at token t0 (see the top of this file).
  template <class Arch>
  float load_chunk(std::int64_t b, std::int64_t h, std::int64_t t0, std::int64_t n, const linear_plan<Arch>& p,
                   linear_slot<Arch>& w) const;
  template <class Arch>
  void decay_rows(std::int64_t n, bool bounded, const linear_plan<Arch>& p, linear_slot<Arch>& w) const;
  template <class Arch>
  void intra_scalar(std::int64_t n, const linear_plan<Arch>& p, linear_slot<Arch>& w) const;
  template <class Arch>
  void intra_segments(std::int64_t n, const linear_plan<Arch>& p, linear_slot<Arch>& w) const;
  template <class Arch>
  void intra_factored(std::int64_t n, const linear_plan<Arch>& p, linear_slot<Arch>& w) const;
  template <class Arch>
  void intra_subblocks(std::int64_t n, const linear_plan<Arch>& p, linear_slot<Arch>& w) const;
  template <class Arch>
  void write_rows(std::int64_t b, std::int64_t h, std::int64_t t0, std::int64_t n, const linear_plan<Arch>& p,
                  linear_slot<Arch>& w) const;
  template <class Arch>
  void carry_state(std::int64_t n, const linear_plan<Arch>& p, linear_slot<Arch>& w) const;
  /// One decode step for (b, h), fused over the state's rows (see the top).
  template <class Arch>
  void decode(std::int64_t b, std::int64_t h, const linear_plan<Arch>& p, linear_slot<Arch>& w) const;
  /// Row t of head (b, h) of x; null when x has no columns (an empty view may be null).
  template <class T>
  static T* row(const tensor_view<T, 4>& x, std::int64_t b, std::int64_t h, std::int64_t t) {
    return x.extent(3) == 0 ? nullptr : &x(b, h, t, 0);
  }
  /// g[0, width) = the log decay of row t for each channel, zeros past K.
  template <class Arch>
  void gate_row(std::int64_t b, std::int64_t h, std::int64_t t, float* g, std::int64_t width) const {
    if (decay.per_channel.stride(3) == 1)
      simd::widen_row<Arch>(row(decay.per_channel, b, h, t), sh.K, g, width);
    else
      for (std::int64_t x = 0; x < width; ++x) g[x] = x < sh.K ? decay(b, h, t, x) : 0.0f;
  }
  /// Head (b, h) as one work item: the decode step for one token, else chunkwise.
  template <class Arch>
  void head(std::int64_t b, std::int64_t h, const linear_plan<Arch>& p, float* slot) const {
    const simd::flush_denormals ftz;  // on the worker thread, for this item only
    linear_slot<Arch> w(slot, p);
    if (sh.t == 1)
      decode(b, h, p, w);
    else
      chunkwise(b, h, p, w);
  }
};

/// out[0, n) = e^{x[0, n)} (n a multiple of lanes), times f[0, n) when given.
template <class Arch>
void exp_row(const float* x, float* out, std::int64_t n, const float* f = nullptr) {
  constexpr int L = simd::lanes<Arch>;
  for (std::int64_t i = 0; i < n; i += L) {
    const simd::fbatch<Arch> e = simd::exp<Arch>(simd::load<Arch>(x + i));
    simd::store<Arch>(out + i, f ? e * simd::load<Arch>(f + i) : e);
  }
}

template <class TQ, class TK, class TV, class TO>
template <class Arch>
void linear_call<TQ, TK, TV, TO>::chunkwise(std::int64_t b, std::int64_t h, const linear_plan<Arch>& p,
                                            linear_slot<Arch>& w) const {
  const std::int64_t K = sh.K, V = sh.V, Kp = p.Kp, Vp = p.Vp, Cp = p.Cp;
  const bool channel = !decay.scalar();
  std::fill(w.s, w.s + Kp * Vp, 0.0f);
  std::fill(w.z, w.z + Kp, 0.0f);
  if (is_given(state.s))
    for (std::int64_t x = 0; x < K; ++x) {
      std::copy(&state.s(b, h, x, 0), &state.s(b, h, x, 0) + V, w.s + x * Vp);
      if (is_given(state.z)) w.z[x] = state.z(b, h, x);
    }

  for (std::int64_t t0 = 0; t0 < sh.t; t0 += p.C) {
    const std::int64_t n = std::min(p.C, sh.t - t0);
    // A gate below the floor zeroes every decay through it, as a reset does; the
    // segment sums keep such a chunk exact where prefix differences would cancel.
    const bool reset = load_chunk<Arch>(b, h, t0, n, p, w) < gate_floor;
    bool bounded = channel && !reset;  // every channel's chunk decay >= e^-40, so kh <= e^40 |k| is finite
    for (std::int64_t x = 0; bounded && x < Kp; ++x) bounded = w.into[(n - 1) * Kp + x] >= -40.0f;
    decay_rows<Arch>(n, bounded, p, w);

    // Inter: the state carried in.
    simd::gemm_tile<Arch, false>(w.qd, Kp, w.s, Vp, w.o, Vp, n, Vp, Kp);
    if (normalize)
      for (std::int64_t r = 0; r < n; ++r) {
        simd::fbatch<Arch> acc(0.0f);
        for (std::int64_t x = 0; x < Kp; x += simd::lanes<Arch>)
          acc = xsimd::fma(simd::load<Arch>(w.qd + r * Kp + x), simd::load<Arch>(w.z + x), acc);
        w.den[r] = simd::reduce_add<Arch>(acc);
      }

    // Intra: A = causal(q kᵀ ⊙ Γ), then o += A v with row r reading v's rows <= r only.
    if (!channel)
      intra_scalar<Arch>(n, p, w);
    else if (reset)
      intra_segments<Arch>(n, p, w);
    else if (bounded)
      intra_factored<Arch>(n, p, w);
    else
      intra_subblocks<Arch>(n, p, w);
    simd::gemm_lower_tile<Arch>(w.a, Cp, w.v, Vp, w.o, Vp, n, Vp);
    write_rows<Arch>(b, h, t0, n, p, w);
    carry_state<Arch>(n, p, w);
  }
  if (is_given(state.s))
    for (std::int64_t x = 0; x < K; ++x) {
      std::copy(w.s + x * Vp, w.s + x * Vp + V, &state.s(b, h, x, 0));
      if (is_given(state.z)) state.z(b, h, x) = w.z[x];
    }
}

/// Rows of one chunk in fp32 and their log decay g (one value, or one per
/// channel) with its inclusive prefix sums `into`; per channel also qd = q ⊙
/// e^{into} and kh = k ⊙ e^{-into}. Returns the smallest gate.
template <class TQ, class TK, class TV, class TO>
template <class Arch>
float linear_call<TQ, TK, TV, TO>::load_chunk(std::int64_t b, std::int64_t h, std::int64_t t0, std::int64_t n,
                                              const linear_plan<Arch>& p, linear_slot<Arch>& w) const {
  using B = simd::fbatch<Arch>;
  constexpr std::int64_t L = simd::lanes<Arch>;
  const std::int64_t K = sh.K, V = sh.V, Kp = p.Kp;
  const bool channel = !decay.scalar();
  float lowest = 0.0f;
  for (std::int64_t r = 0; r < n; ++r) {
    simd::widen_row<Arch>(row(q, b, h, t0 + r), K, w.q + r * Kp, Kp);
    simd::widen_row<Arch>(row(k, b, h, t0 + r), K, w.k + r * Kp, Kp);
    simd::widen_row<Arch>(row(v, b, h, t0 + r), V, w.v + r * p.Vp, p.Vp);
    if (const std::int64_t ahead = t0 + p.C + r; ahead < sh.t) {  // the same row of the next chunk
      simd::prefetch_row(row(q, b, h, ahead), K);
      simd::prefetch_row(row(k, b, h, ahead), K);
      simd::prefetch_row(row(v, b, h, ahead), V);
      if (channel) simd::prefetch_row(row(decay.per_channel, b, h, ahead), K * decay.per_channel.stride(3));
    }
    if (!channel) {
      w.g[r] = decay(b, h, t0 + r, 0);
      lowest = std::min(lowest, w.g[r]);
      w.into[r] = (r ? w.into[r - 1] : 0.0f) + w.g[r];
      continue;
    }
    float* g = w.g + r * Kp;
    gate_row<Arch>(b, h, t0 + r, g, Kp);
    B low(lowest);
    for (std::int64_t x = 0; x < Kp; x += L) {
      const B gx = simd::load<Arch>(g + x);
      const B ix = r ? simd::load<Arch>(w.into + (r - 1) * Kp + x) + gx : gx;
      low = xsimd::min(low, gx);
      simd::store<Arch>(w.into + r * Kp + x, ix);
      simd::store<Arch>(w.qd + r * Kp + x, simd::load<Arch>(w.q + r * Kp + x) * simd::exp<Arch>(ix));
      simd::store<Arch>(w.kh + r * Kp + x, simd::load<Arch>(w.k + r * Kp + x) * simd::exp<Arch>(-ix));
    }
    lowest = std::min(lowest, -simd::reduce_max<Arch>(-low));
  }
  return lowest;
}

/// keep = e^{γ}, the decay of the whole chunk; keys decayed to the chunk's end
/// (kd = k ⊙ e^{past}) and, for a scalar decay, queries from its start (qd).
template <class TQ, class TK, class TV, class TO>
template <class Arch>
void linear_call<TQ, TK, TV, TO>::decay_rows(std::int64_t n, bool bounded, const linear_plan<Arch>& p,
                                             linear_slot<Arch>& w) const {
  using B = simd::fbatch<Arch>;
  constexpr std::int64_t L = simd::lanes<Arch>;
  const std::int64_t Kp = p.Kp;
  const bool channel = !decay.scalar();
  if (channel)
    exp_row<Arch>(w.into + (n - 1) * Kp, w.keep, Kp);
  else
    w.keep[0] = std::exp(w.into[n - 1]);
  if (bounded) {  // kd = kh ⊙ keep: e^{-into} e^{γ} = e^{past}
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t x = 0; x < Kp; x += L)
        simd::store<Arch>(w.kd + r * Kp + x, simd::load<Arch>(w.kh + r * Kp + x) * simd::load<Arch>(w.keep + x));
    return;
  }
  for (std::int64_t r = n - 1; r >= 0; --r) {  // past: exclusive suffix sums
    if (channel) {
      for (std::int64_t x = 0; x < Kp; x += L)
        simd::store<Arch>(w.past + r * Kp + x,
                          r == n - 1 ? B(0.0f)
                                     : simd::load<Arch>(w.past + (r + 1) * Kp + x) +
                                           simd::load<Arch>(w.g + (r + 1) * Kp + x));
      exp_row<Arch>(w.past + r * Kp, w.kd + r * Kp, Kp, w.k + r * Kp);
    } else {
      w.past[r] = r == n - 1 ? 0.0f : w.past[r + 1] + w.g[r + 1];
      const B eq(std::exp(w.into[r])), ek(std::exp(w.past[r]));
      for (std::int64_t x = 0; x < Kp; x += L) {
        simd::store<Arch>(w.qd + r * Kp + x, simd::load<Arch>(w.q + r * Kp + x) * eq);
        simd::store<Arch>(w.kd + r * Kp + x, simd::load<Arch>(w.k + r * Kp + x) * ek);
      }
    }
  }
}

/// Scalar decay: A = q kᵀ, then Γ_rs = e^{seg(s, r)}, seg(s, r) = Σ_{s<u<=r} g_u
/// kept as a row that each new r extends by g_r: sums of the segment's own gates,
/// never differences of long prefix sums, so resets and very negative gates stay
/// exact (as in the reference).
template <class TQ, class TK, class TV, class TO>
template <class Arch>
void linear_call<TQ, TK, TV, TO>::intra_scalar(std::int64_t n, const linear_plan<Arch>& p,
                                               linear_slot<Arch>& w) const {
  using B = simd::fbatch<Arch>;
  constexpr std::int64_t L = simd::lanes<Arch>;
  const std::int64_t Kp = p.Kp, Cp = p.Cp;
  simd::transpose<Arch>(w.k, Kp, n, Kp, w.kt, Cp);
  simd::gemm_tile<Arch, false>(w.q, Kp, w.kt, Cp, w.a, Cp, n, Cp, Kp);
  float* seg = w.P;  // (Cp): seg(s, r) of the current row; -inf past r
  std::fill(seg, seg + Cp, -std::numeric_limits<float>::infinity());
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int64_t cols = (r + L) / L * L;  // whole registers covering [0, r]
    const B g(w.g[r]);
    for (std::int64_t s = 0; s < cols; s += L) simd::store<Arch>(seg + s, simd::load<Arch>(seg + s) + g);
    seg[r] = 0.0f;
    float* ar = w.a + r * Cp;
    exp_row<Arch>(seg, ar, cols, ar);
    std::fill(ar + cols, ar + Cp, 0.0f);
  }
}

/// Per-channel decay with a reset in the chunk: each pair's own segment sums,
/// grown as s walks back from r, so every exponent is exact and <= 0.
template <class TQ, class TK, class TV, class TO>
template <class Arch>
void linear_call<TQ, TK, TV, TO>::intra_segments(std::int64_t n, const linear_plan<Arch>& p,
                                                 linear_slot<Arch>& w) const {
  using B = simd::fbatch<Arch>;
  constexpr std::int64_t L = simd::lanes<Arch>;
  const std::int64_t Kp = p.Kp, Cp = p.Cp;
  std::fill(w.a, w.a + n * Cp, 0.0f);
  float* seg = w.G;  // (Kp)
  for (std::int64_t r = 0; r < n; ++r) {
    std::fill(seg, seg + Kp, 0.0f);
    for (std::int64_t s = r; s >= 0; --s) {
      B acc(0.0f);
      for (std::int64_t x = 0; x < Kp; x += L) {
        const B e = simd::exp<Arch>(simd::load<Arch>(seg + x));
        acc = xsimd::fma(simd::load<Arch>(w.q + r * Kp + x) * simd::load<Arch>(w.k + s * Kp + x), e, acc);
        simd::store<Arch>(seg + x, simd::load<Arch>(seg + x) + simd::load<Arch>(w.g + s * Kp + x));
      }
      w.a[r * Cp + s] = simd::reduce_add<Arch>(acc);
    }
  }
}

/// Per-channel decay that stays above e^-40 over the chunk: Γ factors as
/// e^{into_r} e^{-into_s}, so A = qd khᵀ is one GEMM with no exponent above 40.
template <class TQ, class TK, class TV, class TO>
template <class Arch>
void linear_call<TQ, TK, TV, TO>::intra_factored(std::int64_t n, const linear_plan<Arch>& p,
                                                 linear_slot<Arch>& w) const {
  const std::int64_t Kp = p.Kp, Cp = p.Cp;
  simd::transpose<Arch>(w.kh, Kp, n, Kp, w.kt, Cp);
  simd::gemm_tile<Arch, false>(w.qd, Kp, w.kt, Cp, w.a, Cp, n, Cp, Kp);
  for (std::int64_t r = 0; r < n; ++r) std::fill(w.a + r * Cp + r + 1, w.a + (r + 1) * Cp, 0.0f);
}

/// Per-channel decay below e^-40 over the chunk: A from sub-blocks of 16 rows
/// (secondary chunking). Diagonal sub-blocks factor when their own decay allows
/// it, else each pair takes its own exponent; for sub-blocks i > j the decay
/// splits into three segments, A_ij = (q_i ⊙ e^{P}) diag(e^{G}) (k_j ⊙ e^{S})ᵀ,
/// all <= 0, a GEMM.
template <class TQ, class TK, class TV, class TO>
template <class Arch>
void linear_call<TQ, TK, TV, TO>::intra_subblocks(std::int64_t n, const linear_plan<Arch>& p,
                                                  linear_slot<Arch>& w) const {
  using B = simd::fbatch<Arch>;
  constexpr std::int64_t L = simd::lanes<Arch>;
  const std::int64_t Kp = p.Kp, Cp = p.Cp;
  std::fill(w.a, w.a + n * Cp, 0.0f);
  // Sub-block-local prefix P (inclusive) and suffix Ssuf (exclusive) of the gates.
  for (std::int64_t i0 = 0; i0 < n; i0 += p.sub) {
    const std::int64_t i1 = std::min(n, i0 + p.sub);
    for (std::int64_t x = 0; x < Kp; x += L) {
      B pre(0.0f), suf(0.0f);
      for (std::int64_t r = i0; r < i1; ++r) {
        pre = pre + simd::load<Arch>(w.g + r * Kp + x);
        simd::store<Arch>(w.P + r * Kp + x, pre);
      }
      for (std::int64_t r = i1 - 1; r >= i0; --r) {
        simd::store<Arch>(w.Ssuf + r * Kp + x, suf);
        suf = suf + simd::load<Arch>(w.g + r * Kp + x);
      }
    }
  }
  // qp = q ⊙ e^{P} and kh = k ⊙ e^{Ssuf}, both <= their inputs (qd and past are free now).
  float* qp = w.qd;
  for (std::int64_t r = 0; r < n; ++r) {
    exp_row<Arch>(w.P + r * Kp, qp + r * Kp, Kp, w.q + r * Kp);
    exp_row<Arch>(w.Ssuf + r * Kp, w.kh + r * Kp, Kp, w.k + r * Kp);
  }
  // Diagonal sub-blocks. When the block's decay stays above e^-40, factor it:
  // A_rs = qp_r · (k_s ⊙ e^{-P_s}), with e^{-P} <= e^40 (no overflow). Otherwise
  // each pair takes its own exponent e^{P_r - P_s}.
  float* kf = w.past;
  for (std::int64_t i0 = 0; i0 < n; i0 += p.sub) {
    const std::int64_t i1 = std::min(n, i0 + p.sub);
    bool bounded = true;
    for (std::int64_t x = 0; x < Kp; ++x) bounded &= w.P[(i1 - 1) * Kp + x] >= -40.0f;  // P falls with r
    if (bounded)
      for (std::int64_t r = i0; r < i1; ++r)
        for (std::int64_t x = 0; x < Kp; x += L)
          simd::store<Arch>(kf + r * Kp + x, simd::load<Arch>(w.k + r * Kp + x) *
                                                 simd::exp<Arch>(-simd::load<Arch>(w.P + r * Kp + x)));
    for (std::int64_t r = i0; r < i1; ++r)
      for (std::int64_t s = i0; s <= r; ++s) {
        B acc(0.0f);
        if (bounded) {
          for (std::int64_t x = 0; x < Kp; x += L)
            acc = xsimd::fma(simd::load<Arch>(qp + r * Kp + x), simd::load<Arch>(kf + s * Kp + x), acc);
        } else {
          for (std::int64_t x = 0; x < Kp; x += L)
            acc = xsimd::fma(simd::load<Arch>(w.q + r * Kp + x) * simd::load<Arch>(w.k + s * Kp + x),
                             simd::exp<Arch>(simd::load<Arch>(w.P + r * Kp + x) - simd::load<Arch>(w.P + s * Kp + x)),
                             acc);
        }
        w.a[r * Cp + s] = simd::reduce_add<Arch>(acc);
      }
  }
  // Off-diagonal sub-blocks i > j: (qp_i ⊙ e^{G_ji}) khᵀ_j, G_ji = Σ g strictly between them.
  simd::transpose<Arch>(w.kh, Kp, n, Kp, w.kt, Cp);
  for (std::int64_t i0 = p.sub; i0 < n; i0 += p.sub) {
    const std::int64_t rows = std::min(n, i0 + p.sub) - i0;
    float* qi = w.kh + i0 * Kp;  // kh is in kt now; its rows hold qp_i ⊙ e^{G}
    std::fill(w.G, w.G + Kp, 0.0f);
    for (std::int64_t j0 = i0 - p.sub; j0 >= 0; j0 -= p.sub) {
      if (j0 + p.sub < i0)  // add the whole of sub-block j + 1
        for (std::int64_t x = 0; x < Kp; x += L)
          simd::store<Arch>(w.G + x, simd::load<Arch>(w.G + x) + simd::load<Arch>(w.P + (j0 + 2 * p.sub - 1) * Kp + x));
      for (std::int64_t x = 0; x < Kp; x += L) {
        const B eg = simd::exp<Arch>(simd::load<Arch>(w.G + x));
        for (std::int64_t r = 0; r < rows; ++r)
          simd::store<Arch>(qi + r * Kp + x, simd::load<Arch>(qp + (i0 + r) * Kp + x) * eg);
      }
      simd::gemm_tile<Arch, false>(qi, Kp, w.kt + j0, Cp, w.a + i0 * Cp + j0, Cp, rows, p.sub, Kp);
    }
  }
}

/// o rows out: scale · o (over scale · (qd z + Σ_s A) + eps when normalizing).
template <class TQ, class TK, class TV, class TO>
template <class Arch>
void linear_call<TQ, TK, TV, TO>::write_rows(std::int64_t b, std::int64_t h, std::int64_t t0, std::int64_t n,
                                             const linear_plan<Arch>& p, linear_slot<Arch>& w) const {
  using B = simd::fbatch<Arch>;
  constexpr std::int64_t L = simd::lanes<Arch>;
  const std::int64_t V = sh.V, Vp = p.Vp, Cp = p.Cp;
  for (std::int64_t r = 0; r < n; ++r) {
    float div = 1.0f;
    if (normalize) {
      float den = w.den[r];
      for (std::int64_t s = 0; s <= r; ++s) den += w.a[r * Cp + s];
      div = sh.scale * den + eps;
    }
    const float f = sh.scale / div;
    TO* out = &o(b, h, t0 + r, 0);
    std::int64_t y = 0;
    if constexpr (std::is_same_v<TO, float>)
      for (; y + L <= V; y += L) simd::store<Arch>(out + y, simd::load<Arch>(w.o + r * Vp + y) * B(f));
    for (; y < V; ++y) out[y] = from_float<TO>(w.o[r * Vp + y] * f);
  }
}

/// The state carried past the chunk: S = e^{γ} S + kdᵀ v, z = e^{γ} z + Σ kd.
template <class TQ, class TK, class TV, class TO>
template <class Arch>
void linear_call<TQ, TK, TV, TO>::carry_state(std::int64_t n, const linear_plan<Arch>& p,
                                              linear_slot<Arch>& w) const {
  using B = simd::fbatch<Arch>;
  constexpr std::int64_t L = simd::lanes<Arch>;
  const std::int64_t Kp = p.Kp, Vp = p.Vp;
  const bool channel = !decay.scalar();
  for (std::int64_t x = 0; x < sh.K; ++x) {
    const float keep = w.keep[channel ? x : 0];
    for (std::int64_t y = 0; y < Vp; y += L)
      simd::store<Arch>(w.s + x * Vp + y, simd::load<Arch>(w.s + x * Vp + y) * B(keep));
    w.z[x] *= keep;
  }
  if (normalize)
    for (std::int64_t r = 0; r < n; ++r)
      for (std::int64_t x = 0; x < Kp; x += L)
        simd::store<Arch>(w.z + x, simd::load<Arch>(w.z + x) + simd::load<Arch>(w.kd + r * Kp + x));
  simd::gemm_tile<Arch, true, true>(w.kd, Kp, w.v, Vp, w.s, Vp, Kp, Vp, n);
}

/// Without a caller state, the slot's zeroed S stands in.
template <class TQ, class TK, class TV, class TO>
template <class Arch>
void linear_call<TQ, TK, TV, TO>::decode(std::int64_t b, std::int64_t h, const linear_plan<Arch>& p,
                                         linear_slot<Arch>& w) const {
  using B = simd::fbatch<Arch>;
  constexpr std::int64_t L = simd::lanes<Arch>;
  const std::int64_t K = sh.K, V = sh.V, Vfull = V / L * L;
  // The step in fp32: q, k (K), v (V), and each channel's decay e^g in keep (K).
  simd::widen_row<Arch>(row(q, b, h, 0), K, w.q, p.Kp);
  simd::widen_row<Arch>(row(k, b, h, 0), K, w.k, p.Kp);
  simd::widen_row<Arch>(row(v, b, h, 0), V, w.v, p.Vp);
  if (decay.scalar()) {
    std::fill(w.keep, w.keep + p.Kp, std::exp(decay(b, h, 0, 0)));
  } else {
    gate_row<Arch>(b, h, 0, w.g, p.Kp);
    exp_row<Arch>(w.g, w.keep, p.Kp);
  }
  const bool kept = is_given(state.s) && K > 0;  // K = 0: no state rows (and the view may be null)
  float* s = kept ? &state.s(b, h, 0, 0) : w.s;  // (K, V), rows ld apart
  const std::int64_t ld = kept ? state.s.stride(2) : p.Vp;
  if (!kept) std::fill(w.s, w.s + K * p.Vp, 0.0f);

  // Blocks of up to 4 registers of columns: the block of o stays in registers while
  // the rows of S stream past, each read and written once.
  simd::detail::for_row_blocks<4>(Vfull / L, [&](std::int64_t c0, auto nn) {
    constexpr int NV = decltype(nn)::value;
    const std::int64_t y0 = c0 * L;
    B vb[NV], acc[NV];
    for (int j = 0; j < NV; ++j) vb[j] = simd::load<Arch>(w.v + y0 + j * L), acc[j] = B(0.0f);
    for (std::int64_t x = 0; x < K; ++x) {
      float* row = s + x * ld + y0;
      const B a(w.keep[x]), kx(w.k[x]), qx(w.q[x]);
      for (int j = 0; j < NV; ++j) {
        const B sx = xsimd::fma(a, simd::load<Arch>(row + j * L), kx * vb[j]);
        simd::store<Arch>(row + j * L, sx);
        acc[j] = xsimd::fma(qx, sx, acc[j]);
      }
    }
    for (int j = 0; j < NV; ++j) simd::store<Arch>(w.o + y0 + j * L, acc[j]);
  });
  for (std::int64_t y = Vfull; y < V; ++y) {
    float acc = 0.0f;
    for (std::int64_t x = 0; x < K; ++x) {
      float& sx = s[x * ld + y];
      sx = w.keep[x] * sx + w.k[x] * w.v[y];
      acc += w.q[x] * sx;
    }
    w.o[y] = acc;
  }

  float den = 0.0f;
  if (normalize) {
    const bool kept_z = is_given(state.z) && K > 0;
    float* z = kept_z ? &state.z(b, h, 0) : w.z;  // (K)
    if (!kept_z) std::fill(w.z, w.z + K, 0.0f);
    for (std::int64_t x = 0; x < K; ++x) {
      z[x] = w.keep[x] * z[x] + w.k[x];
      den += w.q[x] * z[x];
    }
  }
  const float f = sh.scale / (normalize ? sh.scale * den + eps : 1.0f);
  for (std::int64_t y = 0; y < V; ++y) o(b, h, 0, y) = from_float<TO>(w.o[y] * f);
}

}  // namespace detail

/// Scratch bytes of linear_attention(q, k, v, o, decay, state, params, backend) for
/// key dim K and value dim V; lend them through backend.scratch to avoid
/// allocating. A call over t rows needs the size for chunk = min(params.chunk, t),
/// so pass the chunk of the longest call (a huge chunk is an error here).
template <class Arch>
std::size_t linear_attention_workspace_size(std::int64_t K, std::int64_t V, const linear_params& params,
                                            const cpu<Arch>& backend) {
  constexpr const char* fn = "linear_attention_workspace_size";
  detail::check_linear_sizes(fn, K, V, params);
  return detail::slot_bytes(detail::linear_plan<Arch>(fn, params.chunk, K, V), backend.exec);
}

/// Linear attention on cpu<Arch>: chunkwise for a prefill, the fused step for one
/// token. Same contract as the reference backend (linear.hpp); results do not
/// depend on the thread count.
template <class Arch, class TQ, class TK, class TV, class TO>
void linear_attention(tensor_view<TQ, 4> q,  // (b, h, t, K)
                      tensor_view<TK, 4> k,  // (b, h, t, K)
                      tensor_view<TV, 4> v,  // (b, h, t, V)
                      tensor_view<TO, 4> o,  // (b, h, t, V)
                      const linear_decay& decay, const linear_state& state, const linear_params& params,
                      const cpu<Arch>& backend) {
  const linear_shape sh = detail::check_linear_call("linear_attention", q, k, v, o, decay, state, params, backend.exec);
  if (sh.b * sh.h * sh.t == 0 || sh.V == 0) return;
  const detail::linear_plan<Arch> plan("linear_attention", std::min(params.chunk, sh.t), sh.K, sh.V);
  const std::size_t per_slot = plan.slot_floats();
  const detail::linear_call<TQ, TK, TV, TO> call{q, k, v, o, decay, state, sh, params.normalize, params.eps};
  detail::scratch_arena arena("linear_attention", backend.scratch, detail::slot_bytes(plan, backend.exec));
  float* base = detail::take_slots(arena, plan, backend.exec);
  parallel_for_slots(backend.exec, sh.b * sh.h, [&](std::int64_t item, std::int64_t slot) {
    call.head(item / sh.h, item % sh.h, plan, base + static_cast<std::size_t>(slot) * per_slot);
  });
}

ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
