// The prefill path of cpu flash: each KV head's keys packed once into (d, kv_tile)
// panels, then one work item per (head, query block) runs the online softmax over
// the tiles its mask leaves non-empty.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "attnkit/attention/flash_cpu/key_weights.hpp"
#include "attnkit/attention/flash_cpu/plan.hpp"
#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace detail {

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
        const bool masked = ts == tile_state::partial;  // masked keys must add nothing, whatever v holds
        if (plan.pack_v)
          simd::pv_tile<Arch>(sc, rows, cols, vp_all + (hp * plan.tiles * KT + j0) * dvp, dvp, acc, dvp, masked);
        else
          simd::pv_tile<Arch>(sc, rows, cols, reinterpret_cast<const float*>(v.row(b, hk, j0)),
                              v.row(b, hk, 1) - v.row(b, hk, 0), acc, dvp, masked);
      }
      const float sink = var.normalizer.sink(h);
      for (std::int64_t r = 0; r < rows; ++r)
        write_row(acc + r * dvp, softmax_state{m[r], l[r]}, sink, out_row(o, b, h, i0 + r), dv, lse_at(lse, b, h, i0 + r));
    });

    if (plan.weights) prefill_key_weights(plan, q, k, params, lse, kw, exec, first, count, kt_all, slot_base);
  }
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
