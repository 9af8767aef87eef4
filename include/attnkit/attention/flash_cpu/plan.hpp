// What every cpu flash path shares: the K/V row interface, the plan that sizes a
// call's tiles and scratch (flash_attention_workspace_size reads it too), and
// the per-row score finishing and output writing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "attnkit/attention/params.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/attention/variant.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/backend/cpu/tanh.hpp"
#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/softmax_state.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// K or V as (b, hkv, skv, d) strided memory; the same interface as paged_kv.
template <class T>
struct strided_kv {
  tensor_view<T, 4> t;
  std::int64_t length(std::int64_t) const { return t.extent(2); }
  T* row(std::int64_t b, std::int64_t h, std::int64_t j) const {
    return t.data_handle() + b * t.stride(0) + h * t.stride(1) + j * t.stride(2);
  }
};

/// What a cpu flash call produces, beyond its shape.
struct flash_request {
  bool values_in_place = false;  // v is fp32 with unit stride: prefill reads it without packing
  bool output = true;            // o (and lse); false: only key weights from a given lse
  bool key_weights = false;      // key_weights.out is requested
  bool lse_given = true;         // the caller passes lse (else key weights need scratch for it)
};

/// Sizes of one cpu flash call; workspace_size and the kernel both derive theirs from it.
template <class Arch>
struct flash_cpu_plan {
  using tiling = simd::flash_tiling<Arch>;
  static constexpr std::int64_t max_decode_rows = 16;

  attention_shape s{};  // skv: the longest sequence
  std::int64_t slots = 1;
  std::int64_t group = 1, dp = 0, dvp = 0;
  bool empty = false;                // no query row: nothing to compute, no scratch
  bool decode = false;
  bool output = true;                // o and lse are computed (else only key weights)
  bool pack_v = true;                // prefill: values copied to fp32 panels
  std::int64_t heads_per_pass = 1;   // prefill: KV heads packed at once
  std::int64_t tiles = 0;            // prefill: kv tiles per head
  std::int64_t rows = 0;             // decode: query rows per group (group * sq)
  std::int64_t splits = 1, chunk = 0;  // decode: KV chunks per (b, kv head), keys per chunk
  bool weights = false;                // key weights requested
  bool own_lse = false;                // prefill: lse lives in scratch for the key-weight pass
  std::int64_t skv_pad = 0;            // decode: skv rounded up to lanes, the row stride of kept scores

  flash_cpu_plan(const char* fn, const attention_shape& shape, std::int64_t concurrency, const flash_request& req)
      : s(shape) {
    constexpr std::int64_t L = tiling::lanes;
    slots = std::max<std::int64_t>(1, concurrency);
    weights = req.key_weights;
    empty = s.b * s.hq * s.sq == 0;  // validated extents: the product fits
    if (empty) return;               // no work, no scratch
    // A bound on every array below, before any of their products is taken.
    const long double skv_pad_ld = static_cast<long double>(s.skv) + tiling::kv_tile;
    const long double d_ld = static_cast<long double>(s.d), dv_ld = static_cast<long double>(s.dv);  // no int64 sums
    check_scratch_floats(fn, slots * skv_pad_ld * (d_ld + dv_ld + 2 * L) +
                                 static_cast<long double>(s.b) * s.hq * s.sq * (skv_pad_ld + dv_ld + 2 * L + 4) +
                                 slots * (tiling::q_tile + L + 16.0L) * (d_ld + dv_ld + tiling::kv_tile + 2 * L));
    group = s.hkv > 0 ? s.hq / s.hkv : 1;
    dp = (s.d + L - 1) / L * L;
    dvp = (s.dv + L - 1) / L * L;
    rows = group * s.sq;
    decode = rows <= max_decode_rows && req.output;  // weights alone take the prefill pass
    pack_v = req.output && !(req.values_in_place && s.dv % L == 0);
    output = req.output;
    own_lse = weights && !decode && !req.lse_given;
    skv_pad = (s.skv + L - 1) / L * L;
    heads_per_pass = std::max<std::int64_t>(1, std::min(s.b * s.hkv, slots));
    tiles = (s.skv + tiling::kv_tile - 1) / tiling::kv_tile;
    const std::int64_t heads = std::max<std::int64_t>(1, s.b * s.hkv);
    const std::int64_t most = std::max<std::int64_t>(1, (s.skv + 255) / 256);  // chunks of >= 256 keys
    splits = std::clamp<std::int64_t>((4 * slots + heads - 1) / heads, 1, most);
    chunk = ((s.skv + splits - 1) / splits + L - 1) / L * L;
  }

  // Prefill scratch: packed K (and V) of heads_per_pass heads, then per slot a
  // query block, a score tile, an accumulator, row states and a row buffer.
  std::size_t kt_floats() const { return static_cast<std::size_t>(heads_per_pass * tiles * tiling::kv_tile * s.d); }
  std::size_t vp_floats() const {
    return pack_v ? static_cast<std::size_t>(heads_per_pass * tiles * tiling::kv_tile * dvp) : 0;
  }
  std::size_t q_floats() const { return static_cast<std::size_t>(tiling::q_tile * s.d); }
  std::size_t s_floats() const { return static_cast<std::size_t>(tiling::q_tile * tiling::kv_tile); }
  std::size_t acc_floats() const { return static_cast<std::size_t>(tiling::q_tile * dvp); }
  // Decode scratch: a partial (acc, m, l) per chunk, then per slot the group's
  // query rows, one tile of keys and values in fp32, and the rows' scores.
  std::size_t partial_floats() const { return static_cast<std::size_t>(rows * dvp + round_up(2 * rows)); }
  std::size_t partials_floats() const { return static_cast<std::size_t>(s.b * s.hkv * splits) * partial_floats(); }
  // Key weights: decode keeps every row's scores; prefill needs the lse if the caller did not pass it.
  std::size_t kept_scores_floats() const {
    return weights && decode ? static_cast<std::size_t>(s.b * s.hkv * rows * skv_pad) : 0;
  }
  std::size_t lse_floats() const { return own_lse ? static_cast<std::size_t>(s.b * s.hq * s.sq) : 0; }

  /// Floats of one slot's scratch; a multiple of 16 so every slot stays 64-byte aligned.
  std::size_t slot_floats() const {
    constexpr std::int64_t L = tiling::lanes;
    const std::int64_t n = decode ? rows * dp + L * (dp + dvp) + rows * tiling::kv_tile
                                  : tiling::q_tile * (s.d + tiling::kv_tile + dvp + 2) + dp;
    return static_cast<std::size_t>(round_up(n));
  }

  std::size_t bytes() const {
    if (empty) return 0;
    const std::size_t all_slots = static_cast<std::size_t>(slots) * slot_floats();
    if (decode) return scratch_arena::bytes_for({partials_floats(), kept_scores_floats(), all_slots});
    return scratch_arena::bytes_for({kt_floats(), vp_floats(), lse_floats(), all_slots});
  }

  static std::int64_t round_up(std::int64_t n) { return (n + 15) / 16 * 16; }
};

/// Applies softcap and ALiBi to one row of raw scores (scale is already in q),
/// then sets masked keys and the padding past `cols` to -inf.
template <class Arch>
void finish_scores(float* s, std::int64_t n, std::int64_t cols, const attention_variant& var, std::int64_t h,
                   std::int64_t i, std::int64_t j0, bool partial) {
  using B = simd::fbatch<Arch>;
  constexpr int L = simd::lanes<Arch>;
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  if (var.score.softcap > 0.0f) {
    const B cap(var.score.softcap);
    for (std::int64_t c = 0; c < n; c += L)
      (cap * simd::tanh<Arch>(B::load_aligned(s + c) / cap)).store_aligned(s + c);
  }
  if (var.score.alibi_slopes) {
    const B slope(var.score.alibi_slopes[h * var.score.alibi_stride]);
    const B step = simd::lane_index<Arch>();
    const std::int64_t pos = var.mask.position(i);
    for (std::int64_t c = 0; c < n; c += L) {
      const B dist = B(static_cast<float>(j0 + c - pos)) + step;
      (B::load_aligned(s + c) + slope * dist).store_aligned(s + c);
    }
  }
  // Key j0 + c is visible iff c <= last && (c >= first || c < sink_end) (attention_mask::visible).
  std::int64_t last = cols - 1;
  if (partial) {
    const attention_mask& mk = var.mask;
    const std::int64_t pos = mk.position(i);
    if (mk.right < mk.skv + mk.sq) last = std::min(last, pos + mk.right - j0);  // else no key is past it
    const std::int64_t first = mk.left < mk.skv ? std::max<std::int64_t>(0, pos - mk.left - j0) : 0;
    const std::int64_t sink_end = std::max<std::int64_t>(0, mk.sinks - j0);
    if (first > sink_end) std::fill(s + sink_end, s + std::min(first, cols), neg_inf);
  }
  std::fill(s + std::max<std::int64_t>(0, last + 1), s + n, neg_inf);
}

/// o and lse of one row from its accumulator and state; the sink logit joins the
/// denominator here. Returns the row's lse.
template <class TO>
float write_row(const float* acc, softmax_state st, float sink, TO* o, std::int64_t dv, float* lse) {
  float scale = 1.0f;
  if (sink != -std::numeric_limits<float>::infinity()) {
    scale = st.rescale(sink);
    st.l += std::exp(sink - st.m);
  }
  const float inv_l = st.l > 0.0f ? scale / st.l : 0.0f;
  for (std::int64_t x = 0; x < dv; ++x) o[x] = from_float<TO>(acc[x] * inv_l);
  if (lse) *lse = st.lse();
  return st.lse();
}

template <class T>
T* out_row(const tensor_view<T, 4>& o, std::int64_t b, std::int64_t h, std::int64_t i) {
  return o.data_handle() + b * o.stride(0) + h * o.stride(1) + i * o.stride(2);
}

inline float* lse_at(const tensor_view<float, 3>& lse, std::int64_t b, std::int64_t h, std::int64_t i) {
  return is_given(lse) ? &lse(b, h, i) : nullptr;
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
