// Key weights on the cpu flash paths: prefill takes a second pass over the
// packed keys with the lse, decode sums the scores it kept.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "attnkit/attention/flash_cpu/plan.hpp"
#include "attnkit/attention/key_weights_arg.hpp"
#include "attnkit/attention/schedule.hpp"
#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/parallel.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// The second pass of key_weights over the (sequence, KV head) pairs [first,
/// first + count) packed in scratch.kt: one item per (KV head, key tile) turns each score into
/// row_weight * exp(s - lse) and adds it down its column. Items own disjoint
/// columns of out, so the result does not depend on the thread count.
template <class Arch, class TQ, class TO, class KS>
void prefill_key_weights(const flash_cpu_plan<Arch>& plan, const flash_io<TQ, TO>& io, const KS& k,
                         const executor& exec, const flash_scratch& scratch, std::int64_t first, std::int64_t count) {
  using tiling = simd::flash_tiling<Arch>;
  constexpr std::int64_t QT = tiling::q_tile, KT = tiling::kv_tile;
  const attention_shape& s = plan.s;
  const std::int64_t d = s.d, group = plan.group;
  const key_weights& kw = io.kw;
  const bool per_kv_head = kw.out.extent(1) != s.hq;
  const std::size_t slot_floats = plan.slot_floats();
  parallel_for_slots(exec, count * plan.tiles, [&](std::int64_t item, std::int64_t slot) {
    const std::int64_t hp = item / plan.tiles, t = item % plan.tiles;
    const std::int64_t b = scratch.prefill_seqs[(first + hp) / s.hkv], hk = (first + hp) % s.hkv, len = k.length(b);
    const std::int64_t j0 = t * KT, cols = std::clamp<std::int64_t>(len - j0, 0, KT), seq_rows = io.batch.rows(b);
    if (j0 >= s.skv) return;
    // Tiles no row can see were not packed: they get weight 0.
    const bool visited = io.tile_reached(b, len, d, hk, group, j0, j0 + KT);
    const float* kt = scratch.kt + (hp * plan.tiles + t) * d * KT;  // (d, KT)
    float* qb = scratch.slots + slot * slot_floats;                 // (QT, d), pre-scaled
    float* sc = qb + plan.q_floats();                               // (QT, KT)
    float* sum = sc + plan.s_floats();                              // (KT)
    const std::int64_t heads_per_row = per_kv_head ? group : 1;
    for (std::int64_t h0 = hk * group; h0 < (hk + 1) * group; h0 += heads_per_row) {
      std::fill(sum, sum + KT, 0.0f);
      for (std::int64_t h = h0; h < h0 + heads_per_row && visited; ++h) {
        const attention_variant var = io.variant(b, len, d, h);
        for (std::int64_t i0 = 0; i0 < seq_rows; i0 += QT) {
          const std::int64_t rows = std::min(QT, seq_rows - i0);
          const tile_state ts = var.mask.classify(i0, i0 + rows, j0, j0 + cols);
          const auto counts = [&](std::int64_t r) {
            const float* row_lse = io.lse_at(b, h, i0 + r);
            return row_weight(kw, io.batch.weight_row(b, i0 + r)) != 0.0f &&
                   *row_lse != -std::numeric_limits<float>::infinity();
          };
          std::int64_t r = 0;
          while (r < rows && !counts(r)) ++r;
          if (ts == tile_state::empty || r == rows) continue;  // SnapKV's window skips all but the last blocks
          for (r = 0; r < rows; ++r) simd::widen_row<Arch>(io.q_row(b, h, i0 + r), d, qb + r * d, d, var.score.scale);
          simd::qk_tile<Arch>(qb, rows, d, kt, sc);
          for (r = 0; r < rows; ++r) {
            if (!counts(r)) continue;
            finish_scores<Arch>(sc + r * KT, KT, cols, var, var.score.slope(h), i0 + r, j0, ts == tile_state::partial);
            simd::add_weights<Arch>(sc + r * KT, KT, *io.lse_at(b, h, i0 + r),
                                    row_weight(kw, io.batch.weight_row(b, i0 + r)), sum);
          }
        }
      }
      float* dst = &kw.out(b, per_kv_head ? hk : h0, j0);
      std::copy(sum, sum + cols, dst);
      // The last tile also clears the rest of the row (keys of longer sequences elsewhere in the batch).
      std::fill(dst + cols, dst + (t + 1 == plan.tiles ? kw.out.extent(2) - j0 : KT), 0.0f);
    }
  });
}

/// Key weights of one (b, KV head) of a decode call from the scores it kept:
/// out = sum over rows of row_weight * exp(s - lse), written in KT-key pieces.
template <class Arch>
void decode_key_weights(const flash_cpu_plan<Arch>& plan, const float* kept, const float* row_lse,
                        std::int64_t len, const key_weights& kw, const attention_batch& batch, std::int64_t b,
                        std::int64_t hk) {
  constexpr int L = simd::lanes<Arch>;
  constexpr std::int64_t KT = simd::flash_tiling<Arch>::kv_tile;
  const attention_shape& s = plan.s;
  const std::int64_t len_pad = (len + L - 1) / L * L;  // the last tile's scores past len are -inf
  if (kw.out.extent(2) == 0) return;  // out is empty, and may be null
  const bool per_kv_head = kw.out.extent(1) != s.hq;
  const std::int64_t sq = batch.rows(b), rows = plan.group * sq, rows_per_out = per_kv_head ? rows : sq;
  alignas(64) float sum[KT];
  for (std::int64_t r0 = 0; r0 < rows; r0 += rows_per_out) {
    float* dst = &kw.out(b, per_kv_head ? hk : hk * plan.group + r0 / sq, 0);
    for (std::int64_t j0 = 0; j0 < len; j0 += KT) {
      std::fill(sum, sum + KT, 0.0f);
      for (std::int64_t r = r0; r < r0 + rows_per_out; ++r) {
        const float weight = row_weight(kw, batch.weight_row(b, r % sq));
        if (weight != 0.0f && row_lse[r] != -std::numeric_limits<float>::infinity())
          simd::add_weights<Arch>(kept + r * plan.skv_pad + j0, std::min(KT, len_pad - j0), row_lse[r], weight, sum);
      }
      std::copy(sum, sum + std::min(KT, len - j0), dst + j0);
    }
    std::fill(dst + len, dst + kw.out.extent(2), 0.0f);
  }
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
