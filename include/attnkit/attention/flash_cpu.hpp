// flash_attention on the cpu<Arch> backend: the reference algorithm of
// flash.hpp, laid out for SIMD registers and caches.
//
// Prefill (many query rows per KV head): each KV head's keys are packed once,
// transposed into fp32 panels kt (d, kv_tile), so that a q_tile x kv_tile block
// of scores is a register-blocked product (simd::qk_tile). Values are read in
// place when they are fp32 rows of whole registers, else packed to fp32 too.
// Work items are (head, query block); each runs the online softmax over the
// tiles its mask leaves non-empty.
//
// Decode (at most 16 query rows per KV head, e.g. sq = 1 with GQA): the query
// rows of a GQA group go together, so each key and value is read once per
// group. The keys of a (batch, KV head) are split into chunks that run in
// parallel; each writes a partial (acc, m, l) and a final pass merges them in
// chunk order, so results are identical run to run for a given concurrency.
//
// Neither path allocates anything proportional to sq x skv; all scratch comes
// from one workspace (flash_attention_workspace_size), lent by the caller or
// allocated once per call.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/paged.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/attention/variant.hpp"
#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/backend/cpu/tanh.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/parallel.hpp"
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

  flash_cpu_plan(const attention_shape& shape, std::int64_t concurrency, const flash_request& req) : s(shape) {
    constexpr std::int64_t L = tiling::lanes;
    slots = std::max<std::int64_t>(1, concurrency);
    group = s.hkv > 0 ? s.hq / s.hkv : 1;
    dp = (s.d + L - 1) / L * L;
    dvp = (s.dv + L - 1) / L * L;
    rows = group * s.sq;
    decode = rows <= max_decode_rows && req.output;  // weights alone take the prefill pass
    pack_v = req.output && !(req.values_in_place && s.dv % L == 0);
    output = req.output;
    weights = req.key_weights;
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

/// The second pass of key_weights over the KV heads [first, first + count) packed
/// in kt_all: one item per (KV head, key tile) turns each score into
/// row_weight * exp(s - lse) and adds it down its column. Items own disjoint
/// columns of out, so the result does not depend on the thread count.
template <class Arch, class TQ, class KS>
void prefill_key_weights(const flash_cpu_plan<Arch>& plan, const tensor_view<TQ, 4>& q, const KS& k,
                         const attention_params& params, const tensor_view<float, 3>& lse, const key_weights& kw,
                         const executor& exec, std::int64_t first, std::int64_t count, const float* kt_all,
                         float* slot_base) {
  using tiling = simd::flash_tiling<Arch>;
  constexpr std::int64_t QT = tiling::q_tile, KT = tiling::kv_tile;
  const attention_shape& s = plan.s;
  const std::int64_t d = s.d, group = plan.group;
  const bool per_kv_head = kw.out.extent(1) != s.hq;
  const std::size_t slot_floats = plan.slot_floats();
  parallel_for_slots(exec, count * plan.tiles, [&](std::int64_t item, std::int64_t slot) {
    const std::int64_t hp = item / plan.tiles, t = item % plan.tiles;
    const std::int64_t b = (first + hp) / s.hkv, hk = (first + hp) % s.hkv, len = k.length(b);
    const std::int64_t j0 = t * KT, cols = std::clamp<std::int64_t>(len - j0, 0, KT);
    const attention_variant var = make_variant(params, s.sq, len, d);
    const float* kt = kt_all + (hp * plan.tiles + t) * d * KT;  // (d, KT)
    float* qb = slot_base + slot * slot_floats;                 // (QT, d), pre-scaled
    float* sc = qb + plan.q_floats();                           // (QT, KT)
    float* sum = sc + plan.s_floats();                          // (KT)
    const std::int64_t heads_per_row = per_kv_head ? group : 1;
    for (std::int64_t h0 = hk * group; h0 < (hk + 1) * group; h0 += heads_per_row) {
      std::fill(sum, sum + KT, 0.0f);
      for (std::int64_t h = h0; h < h0 + heads_per_row && cols > 0; ++h)
        for (std::int64_t i0 = 0; i0 < s.sq; i0 += QT) {
          const std::int64_t rows = std::min(QT, s.sq - i0);
          const tile_state ts = var.mask.classify(i0, i0 + rows, j0, j0 + cols);
          const auto counts = [&](std::int64_t r) {
            return row_weight(kw, i0 + r) != 0.0f && lse(b, h, i0 + r) != -std::numeric_limits<float>::infinity();
          };
          std::int64_t r = 0;
          while (r < rows && !counts(r)) ++r;
          if (ts == tile_state::empty || r == rows) continue;  // SnapKV's window skips all but the last blocks
          for (r = 0; r < rows; ++r)
            simd::widen_row<Arch>(out_row(q, b, h, i0 + r), d, qb + r * d, d, var.score.scale);
          simd::qk_tile<Arch>(qb, rows, d, kt, sc);
          for (r = 0; r < rows; ++r) {
            if (!counts(r)) continue;
            finish_scores<Arch>(sc + r * KT, KT, cols, var, h, i0 + r, j0, ts == tile_state::partial);
            simd::add_weights<Arch>(sc + r * KT, KT, lse(b, h, i0 + r), row_weight(kw, i0 + r), sum);
          }
        }
      float* dst = &kw.out(b, per_kv_head ? hk : h0, j0);
      std::copy(sum, sum + cols, dst);
      std::fill(dst + cols, dst + std::min(KT, s.skv - j0), 0.0f);
    }
  });
}

template <class Arch, class TQ, class KS, class VS, class TO>
void flash_prefill(const flash_cpu_plan<Arch>& plan, const tensor_view<TQ, 4>& q, const KS& k, const VS& v,
                   const tensor_view<TO, 4>& o, const attention_params& params, const tensor_view<float, 3>& lse,
                   const key_weights& kw, const executor& exec, scratch_arena& arena) {
  using tiling = simd::flash_tiling<Arch>;
  constexpr std::int64_t QT = tiling::q_tile, KT = tiling::kv_tile;
  const attention_shape& s = plan.s;
  const std::int64_t d = s.d, dv = s.dv, dvp = plan.dvp, group = plan.group;
  float* const kt_all = arena.take(plan.kt_floats());  // (heads_per_pass, tiles, d, KT)
  float* const vp_all = arena.take(plan.vp_floats());  // (heads_per_pass, tiles * KT, dvp)
  const std::size_t slot_floats = plan.slot_floats();
  float* const slot_base = arena.take(plan.slots * slot_floats);
  const std::int64_t q_blocks = (s.sq + QT - 1) / QT;
  const std::int64_t heads = s.b * s.hkv;

  for (std::int64_t first = 0; first < heads; first += plan.heads_per_pass) {
    const std::int64_t count = std::min(plan.heads_per_pass, heads - first);

    // Pack: keys of each tile transposed to (d, KT), values (if needed) to (KT, dvp); zeros past the end.
    parallel_for_slots(exec, count * plan.tiles, [&](std::int64_t item, std::int64_t slot) {
      const std::int64_t hp = item / plan.tiles, t = item % plan.tiles;
      const std::int64_t b = (first + hp) / s.hkv, hk = (first + hp) % s.hkv, len = k.length(b);
      float* kt = kt_all + (hp * plan.tiles + t) * d * KT;
      float* row = slot_base + slot * slot_floats;  // (d)
      for (std::int64_t c = 0; c < KT; ++c) {
        const std::int64_t j = t * KT + c;
        if (j < len) {
          simd::widen_row<Arch>(k.row(b, hk, j), d, row, d);
          for (std::int64_t x = 0; x < d; ++x) kt[x * KT + c] = row[x];
        } else {
          for (std::int64_t x = 0; x < d; ++x) kt[x * KT + c] = 0.0f;
        }
        if (plan.pack_v) {
          float* vr = vp_all + (hp * plan.tiles * KT + j) * dvp;
          if (j < len)
            simd::widen_row<Arch>(v.row(b, hk, j), dv, vr, dvp);
          else
            std::fill(vr, vr + dvp, 0.0f);
        }
      }
    });

    // Compute: one (head, query block) per item.
    if (plan.output) parallel_for_slots(exec, count * group * q_blocks, [&](std::int64_t item, std::int64_t slot) {
      const std::int64_t hp = item / (group * q_blocks), h_in_group = item / q_blocks % group;
      const std::int64_t b = (first + hp) / s.hkv, hk = (first + hp) % s.hkv, h = hk * group + h_in_group;
      const std::int64_t i0 = item % q_blocks * QT, rows = std::min(QT, s.sq - i0), len = k.length(b);
      const attention_variant var = make_variant(params, s.sq, len, d);
      float* qb = slot_base + slot * slot_floats;     // (rows, d), pre-scaled
      float* sc = qb + plan.q_floats();               // (rows, KT) scores, then weights
      float* acc = sc + plan.s_floats();              // (rows, dvp)
      float* m = acc + plan.acc_floats();             // (rows) running max
      float* l = m + QT;                              // (rows) running sum
      for (std::int64_t r = 0; r < rows; ++r) {
        simd::widen_row<Arch>(out_row(q, b, h, i0 + r), d, qb + r * d, d, var.score.scale);
        const softmax_state init;
        m[r] = init.m;
        l[r] = init.l;
      }
      std::fill(acc, acc + rows * dvp, 0.0f);

      const float* kt_head = kt_all + hp * plan.tiles * d * KT;
      for (std::int64_t t = 0; t * KT < len; ++t) {
        const std::int64_t j0 = t * KT, cols = std::min(KT, len - j0);
        const tile_state ts = var.mask.classify(i0, i0 + rows, j0, j0 + cols);
        if (ts == tile_state::empty) continue;
        simd::qk_tile<Arch>(qb, rows, d, kt_head + t * d * KT, sc);
        for (std::int64_t r = 0; r < rows; ++r) {
          float* sr = sc + r * KT;
          finish_scores<Arch>(sr, KT, cols, var, h, i0 + r, j0, ts == tile_state::partial);
          softmax_state st{m[r], l[r]};
          const float alpha = simd::softmax_step<Arch>(sr, KT, st);
          m[r] = st.m;
          l[r] = st.l;
          if (alpha != 1.0f) simd::scale_row<Arch>(acc + r * dvp, dvp, alpha);
        }
        if (plan.pack_v)
          simd::pv_tile<Arch>(sc, rows, cols, vp_all + (hp * plan.tiles * KT + j0) * dvp, dvp, acc, dvp);
        else
          simd::pv_tile<Arch>(sc, rows, cols, reinterpret_cast<const float*>(v.row(b, hk, j0)),
                              v.row(b, hk, 1) - v.row(b, hk, 0), acc, dvp);
      }
      const float sink = var.normalizer.sink(h);
      for (std::int64_t r = 0; r < rows; ++r)
        write_row(acc + r * dvp, softmax_state{m[r], l[r]}, sink, out_row(o, b, h, i0 + r), dv, lse_at(lse, b, h, i0 + r));
    });

    if (plan.weights) prefill_key_weights(plan, q, k, params, lse, kw, exec, first, count, kt_all, slot_base);
  }
}

/// Asks for the cache lines of a row of n elements ahead of their use.
template <class T>
void prefetch_row(const T* p, std::int64_t n) {
  const char* bytes = reinterpret_cast<const char*>(p);
  for (std::int64_t x = 0; x < n * static_cast<std::int64_t>(sizeof(T)); x += 64) __builtin_prefetch(bytes + x);
}

/// Key weights of one (b, KV head) of a decode call from the scores it kept:
/// out = sum over rows of row_weight * exp(s - lse), written in KT-key pieces.
template <class Arch>
void decode_key_weights(const flash_cpu_plan<Arch>& plan, const float* kept, const float* row_lse,
                        std::int64_t len, const key_weights& kw, std::int64_t b, std::int64_t hk) {
  constexpr int L = simd::lanes<Arch>;
  constexpr std::int64_t KT = simd::flash_tiling<Arch>::kv_tile;
  const attention_shape& s = plan.s;
  const std::int64_t len_pad = (len + L - 1) / L * L;  // the last tile's scores past len are -inf
  const bool per_kv_head = kw.out.extent(1) != s.hq;
  const std::int64_t rows_per_out = per_kv_head ? plan.rows : s.sq;
  alignas(64) float sum[KT];
  for (std::int64_t r0 = 0; r0 < plan.rows; r0 += rows_per_out) {
    float* dst = &kw.out(b, per_kv_head ? hk : hk * plan.group + r0 / s.sq, 0);
    for (std::int64_t j0 = 0; j0 < len; j0 += KT) {
      std::fill(sum, sum + KT, 0.0f);
      for (std::int64_t r = r0; r < r0 + rows_per_out; ++r) {
        const float weight = row_weight(kw, r % s.sq);
        if (weight != 0.0f && row_lse[r] != -std::numeric_limits<float>::infinity())
          simd::add_weights<Arch>(kept + r * plan.skv_pad + j0, std::min(KT, len_pad - j0), row_lse[r], weight, sum);
      }
      std::copy(sum, sum + std::min(KT, len - j0), dst + j0);
    }
    std::fill(dst + len, dst + s.skv, 0.0f);
  }
}

template <class Arch, class TQ, class KS, class VS, class TO>
void flash_decode(const flash_cpu_plan<Arch>& plan, const tensor_view<TQ, 4>& q, const KS& k, const VS& v,
                  const tensor_view<TO, 4>& o, const attention_params& params, const tensor_view<float, 3>& lse,
                  const key_weights& kw, const executor& exec, scratch_arena& arena) {
  using B = simd::fbatch<Arch>;
  constexpr int L = simd::lanes<Arch>;
  constexpr std::int64_t KT = simd::flash_tiling<Arch>::kv_tile;  // the row stride pv_tile expects
  constexpr std::int64_t prefetch_distance = 4 * L;               // keys ahead
  const attention_shape& s = plan.s;
  const std::int64_t d = s.d, dv = s.dv, dp = plan.dp, dvp = plan.dvp, rows = plan.rows, sq = s.sq;
  float* const partials = arena.take(plan.partials_floats());  // (b, hkv, splits) x (rows, dvp + 2)
  float* const kept = arena.take(plan.kept_scores_floats());   // (b, hkv, rows, skv_pad): scores for key weights
  const std::size_t slot_floats = plan.slot_floats();
  float* const slot_base = arena.take(plan.slots * slot_floats);

  parallel_for_slots(exec, s.b * s.hkv * plan.splits, [&](std::int64_t item, std::int64_t slot) {
    const std::int64_t b = item / (s.hkv * plan.splits), hk = item / plan.splits % s.hkv;
    const std::int64_t len = k.length(b), ja = item % plan.splits * plan.chunk;
    const std::int64_t jb = std::min(len, ja + plan.chunk);
    const attention_variant var = make_variant(params, sq, len, d);
    float* qb = slot_base + slot * slot_floats;  // (rows, dp), row r = (head hk * group + r / sq, query r % sq)
    float* kb = qb + rows * dp;                  // (L, dp)
    float* vb = kb + L * dp;                     // (L, dvp)
    float* sc = vb + L * dvp;                    // (rows, KT): the first L of each row used
    float* acc = partials + item * plan.partial_floats();  // (rows, dvp)
    float* m = acc + rows * dvp;                           // (rows)
    float* l = m + rows;                                   // (rows)
    float* kept_rows = kept + (b * s.hkv + hk) * rows * plan.skv_pad;  // (rows, skv_pad)
    for (std::int64_t r = 0; r < rows; ++r)
      simd::widen_row<Arch>(out_row(q, b, hk * plan.group + r / sq, r % sq), d, qb + r * dp, dp, var.score.scale);
    std::fill(acc, acc + rows * dvp, 0.0f);
    const softmax_state init;
    std::fill(m, m + rows, init.m);
    std::fill(l, l + rows, init.l);

    for (std::int64_t j0 = ja; j0 < jb; j0 += L) {
      const std::int64_t cols = std::min<std::int64_t>(L, jb - j0);
      const tile_state ts = var.mask.classify(0, sq, j0, j0 + cols);
      if (ts == tile_state::empty) {
        if (plan.weights)
          for (std::int64_t r = 0; r < rows; ++r)
            std::fill_n(kept_rows + r * plan.skv_pad + j0, L, -std::numeric_limits<float>::infinity());
        continue;
      }
      for (std::int64_t c = 0; c < L; ++c) {
        if (j0 + c + prefetch_distance < jb) {  // DRAM latency hides behind the work on this tile
          prefetch_row(k.row(b, hk, j0 + c + prefetch_distance), d);
          prefetch_row(v.row(b, hk, j0 + c + prefetch_distance), dv);
        }
        if (c < cols) {
          simd::widen_row<Arch>(k.row(b, hk, j0 + c), d, kb + c * dp, dp);
          simd::widen_row<Arch>(v.row(b, hk, j0 + c), dv, vb + c * dvp, dvp);
        } else {
          std::fill(kb + c * dp, kb + (c + 1) * dp, 0.0f);
          std::fill(vb + c * dvp, vb + (c + 1) * dvp, 0.0f);
        }
      }
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t h = hk * plan.group + r / sq, i = r % sq;
        B dot[L];
        for (int c = 0; c < L; ++c) dot[c] = B(0.0f);
        for (std::int64_t x = 0; x < dp; x += L) {
          const B qv = B::load_aligned(qb + r * dp + x);
          for (int c = 0; c < L; ++c) dot[c] = xsimd::fma(qv, B::load_aligned(kb + c * dp + x), dot[c]);
        }
        float* sr = sc + r * KT;
        simd::transpose_sum<Arch>(dot).store_aligned(sr);
        finish_scores<Arch>(sr, L, cols, var, h, i, j0, ts == tile_state::partial);
        if (plan.weights) std::copy(sr, sr + L, kept_rows + r * plan.skv_pad + j0);
        softmax_state st{m[r], l[r]};
        const float alpha = simd::softmax_step<Arch>(sr, L, st);
        m[r] = st.m;
        l[r] = st.l;
        if (alpha != 1.0f) simd::scale_row<Arch>(acc + r * dvp, dvp, alpha);
      }
      simd::pv_tile<Arch>(sc, rows, cols, vb, dvp, acc, dvp);
    }
  });

  // Merge each row's chunks into chunk 0's accumulator, in chunk order.
  parallel_for(exec, s.b * s.hkv, [&](std::int64_t bh) {
    const std::int64_t b = bh / s.hkv, hk = bh % s.hkv;
    const attention_variant var = make_variant(params, sq, k.length(b), d);
    float* const part0 = partials + bh * plan.splits * plan.partial_floats();
    const auto part = [&](std::int64_t c) { return part0 + c * plan.partial_floats(); };
    float row_lse[flash_cpu_plan<Arch>::max_decode_rows];
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t h = hk * plan.group + r / sq, i = r % sq;
      softmax_state st;
      for (std::int64_t c = 0; c < plan.splits; ++c) st.m = std::max(st.m, part(c)[rows * dvp + r]);
      float* acc = part0 + r * dvp;
      for (std::int64_t c = 0; c < plan.splits; ++c) {
        const float mc = part(c)[rows * dvp + r];
        const float w = mc == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(mc - st.m);
        st.l += w * part(c)[rows * dvp + rows + r];
        const float* ac = part(c) + r * dvp;
        for (std::int64_t x = 0; x < dv; ++x) acc[x] = c == 0 ? w * acc[x] : acc[x] + w * ac[x];
      }
      row_lse[r] = write_row(acc, st, var.normalizer.sink(h), out_row(o, b, h, i), dv, lse_at(lse, b, h, i));
    }
    if (plan.weights) decode_key_weights(plan, kept + bh * rows * plan.skv_pad, row_lse, k.length(b), kw, b, hk);
  });
}

/// Runs a validated call: plans, takes the scratch, picks prefill or decode.
template <class Arch, class TQ, class KS, class VS, class TO>
void flash_cpu(const char* fn, const attention_shape& s, const flash_request& req, const tensor_view<TQ, 4>& q,
               const KS& k, const VS& v, const tensor_view<TO, 4>& o, const attention_params& params,
               tensor_view<float, 3> lse, const key_weights& kw, const cpu<Arch>& backend) {
  const flash_cpu_plan<Arch> plan(s, backend.exec.concurrency(), req);
  scratch_arena arena(fn, backend.scratch, plan.bytes());
  if (plan.weights && s.sq == 0)  // no query row: no key received any weight
    for (std::int64_t b = 0; b < s.b; ++b)
      for (std::int64_t w = 0; w < kw.out.extent(1); ++w) std::fill_n(&kw.out(b, w, 0), s.skv, 0.0f);
  if (s.b * s.hq * s.sq == 0) return;
  if (plan.own_lse) lse = tensor_view<float, 3>(arena.take(plan.lse_floats()), {s.b, s.hq, s.sq});
  if (plan.decode)
    flash_decode(plan, q, k, v, o, params, lse, kw, backend.exec, arena);
  else
    flash_prefill(plan, q, k, v, o, params, lse, kw, backend.exec, arena);
}

template <class TV>
bool values_in_place(const tensor_view<TV, 4>& v) {
  return std::is_same_v<std::remove_const_t<TV>, float> && (v.extent(3) <= 1 || v.stride(3) == 1);
}

inline flash_request make_request(bool values_in_place, const tensor_view<float, 3>& lse, const key_weights& kw) {
  return flash_request{values_in_place, true, is_given(kw), is_given(lse)};
}

/// Every check of a paged call; returns its shape, with skv the longest sequence.
template <class TQ, class TK, class TV, class TO>
attention_shape check_paged_call(const char* fn, const tensor_view<TQ, 4>& q, const paged_kv<TK>& k,
                                 const paged_kv<TV>& v, const tensor_view<TO, 4>& o, const attention_params& params,
                                 const tensor_view<float, 3>& lse) {
  static_assert(attention_types_ok<TQ, TK, TV, TO>, "q, k, v, o must hold float, half or bfloat16 (o non-const)");
  check_view(fn, "q", q, true);
  check_view(fn, "o", o, true);
  check_paged(fn, "k", k);
  check_paged(fn, "v", v);
  attention_shape s{q.extent(0), q.extent(1), k.heads(), q.extent(2), 0, q.extent(3), v.dim()};
  ATTNKIT_CHECK(k.table.batch() == s.b, fn, ": k.table has ", k.table.batch(), " sequences, q.extent(0) (b) = ",
                s.b);
  ATTNKIT_CHECK(v.table.batch() == s.b, fn, ": v.table has ", v.table.batch(), " sequences, q.extent(0) (b) = ",
                s.b);
  ATTNKIT_CHECK(v.heads() == s.hkv, fn, ": v.pages.extent(1) (hkv) must equal k.pages.extent(1) = ", s.hkv,
                ", got ", v.heads());
  ATTNKIT_CHECK(s.hkv > 0 && s.hq % s.hkv == 0, fn, ": q.extent(1) (hq) = ", s.hq,
                " must be a multiple of k.pages.extent(1) (hkv) = ", s.hkv);
  ATTNKIT_CHECK(k.dim() == s.d, fn, ": k.pages.extent(3) (d) must equal q.extent(3) = ", s.d, ", got ", k.dim());
  check_extent(fn, "o", o, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "o", o, 1, "hq", s.hq, "q.extent(1)");
  check_extent(fn, "o", o, 2, "sq", s.sq, "q.extent(2)");
  check_extent(fn, "o", o, 3, "dv", s.dv, "v.pages.extent(3)");
  std::int64_t shortest = s.b > 0 ? k.length(0) : 0;
  for (std::int64_t b = 0; b < s.b; ++b) {
    ATTNKIT_CHECK(k.length(b) == v.length(b), fn, ": sequence ", b, " has ", k.length(b), " keys but ",
                  v.length(b), " values");
    s.skv = std::max(s.skv, k.length(b));
    shortest = std::min(shortest, k.length(b));
  }
  attention_shape params_shape = s;
  params_shape.skv = shortest;  // sinks must exist in every sequence
  check_params(fn, params, params_shape);
  check_lse(fn, lse, s);
  return s;
}

}  // namespace detail

/// flash_attention on the SIMD CPU backend; same shapes and contract as the
/// reference backend. key_weights (key_weights.hpp), when given, receives the
/// attention each key got, from this same call.
template <class Arch, class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const attention_params& params, tensor_view<float, 3> lse, const key_weights& kw,
                     const cpu<Arch>& backend) {
  constexpr const char* fn = "flash_attention";
  const attention_shape s = detail::check_attention_call(fn, q, k, v, o, params, lse);
  detail::check_key_weights(fn, kw, s);
  detail::flash_cpu(fn, s, detail::make_request(detail::values_in_place(v), lse, kw), q, detail::strided_kv<TK>{k},
                    detail::strided_kv<TV>{v}, o, params, lse, kw, backend);
}

template <class Arch, class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const attention_params& params, tensor_view<float, 3> lse, const cpu<Arch>& backend) {
  flash_attention(q, k, v, o, params, lse, key_weights{}, backend);
}

/// flash_attention over a paged KV cache: sequence b attends to its own
/// k.length(b) keys (bottom-right aligned masks use that length). Bit for bit
/// the result of the same keys and values stored contiguously. key_weights.out
/// has skv = the longest sequence; entries past a sequence's length get 0.
template <class Arch, class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q,  // (b, hq, sq, d)
                     const paged_kv<TK>& k, const paged_kv<TV>& v,
                     tensor_view<TO, 4> o,  // (b, hq, sq, dv)
                     const attention_params& params, tensor_view<float, 3> lse,  // (b, hq, sq) or empty
                     const key_weights& kw, const cpu<Arch>& backend) {
  constexpr const char* fn = "flash_attention";
  const attention_shape s = detail::check_paged_call(fn, q, k, v, o, params, lse);
  detail::check_key_weights(fn, kw, s);
  detail::flash_cpu(fn, s, detail::make_request(false, lse, kw), q, k, v, o, params, lse, kw, backend);
}

template <class Arch, class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, const paged_kv<TK>& k, const paged_kv<TV>& v, tensor_view<TO, 4> o,
                     const attention_params& params, tensor_view<float, 3> lse, const cpu<Arch>& backend) {
  flash_attention(q, k, v, o, params, lse, key_weights{}, backend);
}

/// The paged call on cpu<xsimd::default_arch>.
template <class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, const paged_kv<TK>& k, const paged_kv<TV>& v, tensor_view<TO, 4> o,
                     const attention_params& params = {}, tensor_view<float, 3> lse = {},
                     const key_weights& kw = {}) {
  flash_attention(q, k, v, o, params, lse, kw, cpu<xsimd::default_arch>{});
}

/// The second pass of key_weights on its own (see the reference backend's
/// overload): K is packed once per KV head, then each (KV head, key tile) sums
/// its column of probabilities over the query rows that carry weight.
template <class Arch, class TQ, class TK>
void attention_key_weights(tensor_view<TQ, 4> q,  // (b, hq, sq, d)
                           tensor_view<TK, 4> k,  // (b, hkv, skv, d)
                           const attention_params& params,
                           tensor_view<const float, 3> lse,  // (b, hq, sq)
                           const key_weights& kw, const cpu<Arch>& backend) {
  constexpr const char* fn = "attention_key_weights";
  const attention_shape s = detail::check_key_weights_call(fn, q, k, params, lse, kw);
  // With output off the kernel only reads lse.
  const tensor_view<float, 3> lse_in(const_cast<float*>(lse.data_handle()), lse.extents(), lse.strides());
  detail::flash_cpu(fn, s, detail::flash_request{false, false, true, true}, q, detail::strided_kv<TK>{k},
                    detail::strided_kv<TK>{k}, tensor_view<float, 4>{}, params, lse_in, kw, backend);
}

/// Scratch bytes of flash_attention(q, k, v, o, params, lse, kw, backend). Lend at
/// least that much through backend.scratch and the call allocates nothing. It
/// depends on the shapes, v's element type, backend.exec.concurrency(), and
/// whether lse and key weights are requested (pass the same lse and kw).
template <class Arch, class TQ, class TK, class TV>
std::size_t flash_attention_workspace_size(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
                                           const cpu<Arch>& backend, tensor_view<float, 3> lse = {},
                                           const key_weights& kw = {}) {
  const attention_shape s{q.extent(0), q.extent(1), k.extent(1), q.extent(2), k.extent(2), q.extent(3), v.extent(3)};
  const auto req = detail::make_request(detail::values_in_place(v), lse, kw);
  return detail::flash_cpu_plan<Arch>(s, backend.exec.concurrency(), req).bytes();
}

/// Scratch bytes of the paged flash_attention call (for the current block tables).
template <class Arch, class TQ, class TK, class TV>
std::size_t flash_attention_workspace_size(tensor_view<TQ, 4> q, const paged_kv<TK>& k, const paged_kv<TV>& v,
                                           const cpu<Arch>& backend, tensor_view<float, 3> lse = {},
                                           const key_weights& kw = {}) {
  detail::check_paged("flash_attention_workspace_size", "k", k);
  attention_shape s{q.extent(0), q.extent(1), k.heads(), q.extent(2), 0, q.extent(3), v.dim()};
  for (std::int64_t b = 0; b < k.table.batch(); ++b) s.skv = std::max(s.skv, k.length(b));
  return detail::flash_cpu_plan<Arch>(s, backend.exec.concurrency(), detail::make_request(false, lse, kw)).bytes();
}

ATTNKIT_END_NAMESPACE

ATTNKIT_SIMD_END
