// The decode path of cpu flash: the query rows of a GQA group go together, the
// keys of each (batch, KV head) split into chunks that run in parallel, and a
// final pass merges the chunks' partial states in chunk order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "attnkit/attention/flash_cpu/key_weights.hpp"
#include "attnkit/attention/flash_cpu/plan.hpp"
#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/backend/cpu/prefetch.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace detail {

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
          simd::prefetch_row(k.row(b, hk, j0 + c + prefetch_distance), d);
          simd::prefetch_row(v.row(b, hk, j0 + c + prefetch_distance), dv);
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
      simd::pv_tile<Arch>(sc, rows, cols, vb, dvp, acc, dvp, ts == tile_state::partial);
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

}  // namespace detail
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
