// flash_attention: tiled attention with an online softmax. The result equals
// dense_attention's, but no score matrix is ever materialized: each tile of
// query rows streams over tiles of keys, keeping only a running max, a running
// sum and an fp32 output accumulator per row. Tiles the mask leaves empty are
// skipped whole; full tiles skip the per-element mask test.
//
// This file holds the reference backend, the algorithm written plainly, and
// the call without a backend tag, which picks the best backend compiled in.
// The cpu<Arch> backend is in flash_cpu.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/check_args.hpp"
#include "attnkit/attention/flash_front.hpp"
#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/schedule.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/attention/variant.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/softmax_state.hpp"
#include "attnkit/core/tensor_view.hpp"

#if ATTNKIT_HAS_XSIMD
#include "attnkit/attention/flash_cpu.hpp"
#endif

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// The reference algorithm over either form of keys (KS, VS: strided_kv or
/// paged_rows), for every sequence of a checked call.
template <class TQ, class KS, class VS, class TO>
void flash_reference(const checked_call& c, const attention_args<TQ, typename KS::element, typename VS::element, TO>& a,
                     const KS& k, const VS& v) {
  const attention_shape& s = c.s;
  constexpr std::int64_t tile_q = 16, tile_kv = 32;
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  const std::int64_t group = s.hq / s.hkv;
  std::vector<softmax_state> row(tile_q);                          // per query row of the tile
  std::vector<float> acc(static_cast<std::size_t>(tile_q * s.dv));  // (tile_q, dv) unnormalized output
  std::vector<float> p(static_cast<std::size_t>(tile_q * tile_kv));  // (tile_q, tile_kv) scores, then weights

  for (std::int64_t b = 0; b < s.b; ++b)
    for (std::int64_t h = 0; h < s.hq; ++h) {
      const std::int64_t len = k.length(b), qb = c.batch.q_batch(b), r0 = c.batch.row0(b), hk = h / group;
      const attention_variant var = c.batch.variant(a.params, b, len, s.d, h);
      for (std::int64_t i0 = 0; i0 < c.batch.rows(b); i0 += tile_q) {
        const std::int64_t rows = std::min(tile_q, c.batch.rows(b) - i0);
        std::fill(row.begin(), row.end(), softmax_state{});
        std::fill(acc.begin(), acc.end(), 0.0f);

        // The schedule: only key tiles that the rows' band reaches, classified by the mask.
        for_each_tile(visible_keys(var.mask, i0, i0 + rows), tile_kv, len, [&](std::int64_t j0, std::int64_t j1) {
          const tile_state state = var.mask.classify(i0, i0 + rows, j0, j1);
          if (state == tile_state::empty) return;
          for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t i = i0 + r;
            float* pr = &p[r * tile_kv];
            // Scores of this row against the tile's keys, and their max.
            float block_max = neg_inf;
            for (std::int64_t j = j0; j < j1; ++j) {
              pr[j - j0] = neg_inf;
              if (state == tile_state::partial && !var.mask.visible(i, j)) continue;
              const auto* kr = k.row(b, hk, j);
              const float ks = k.scale(b, hk, j);  // 1 unless quantized
              float dot = 0.0f;
              for (std::int64_t x = 0; x < s.d; ++x) dot += to_float(a.q(qb, h, r0 + i, x)) * (to_float(kr[x]) * ks);
              pr[j - j0] = var.score(dot, h, var.mask.position(i), var.mask.key_position(j));
              block_max = std::max(block_max, pr[j - j0]);
            }
            // Move the row's reference max, rescale what it has so far, add this tile.
            const float alpha = row[r].rescale(block_max);
            float* ar = &acc[r * s.dv];
            for (std::int64_t x = 0; x < s.dv; ++x) ar[x] *= alpha;
            if (row[r].m == neg_inf) continue;  // nothing visible yet
            for (std::int64_t j = j0; j < j1; ++j) {
              const float w = std::exp(pr[j - j0] - row[r].m);
              row[r].l += w;
              if (w == 0.0f) continue;
              const auto* vr = v.row(b, hk, j);
              const float vs = v.scale(b, hk, j);
              for (std::int64_t x = 0; x < s.dv; ++x) ar[x] += w * (to_float(vr[x]) * vs);
            }
          }
        });

        // The sink logit joins the denominator only, then each row is normalized.
        const float sink = var.normalizer.sink(h);
        for (std::int64_t r = 0; r < rows; ++r) {
          if (sink != neg_inf) {
            const float alpha = row[r].rescale(sink);
            for (std::int64_t x = 0; x < s.dv; ++x) acc[r * s.dv + x] *= alpha;
            row[r].l += std::exp(sink - row[r].m);
          }
          const float inv_l = row[r].l > 0.0f ? 1.0f / row[r].l : 0.0f;
          for (std::int64_t x = 0; x < s.dv; ++x) a.o(qb, h, r0 + i0 + r, x) = from_float<TO>(acc[r * s.dv + x] * inv_l);
          if (is_given(a.lse)) a.lse(qb, h, r0 + i0 + r) = row[r].lse();
        }
      }
    }
}

}  // namespace detail

/// o = softmax(score(q, k)) v, tiled, on the reference backend, for every input
/// form of attention_args (strided or paged K/V, ragged rows, positions, a
/// custom mask). Same contract as dense_attention (GQA by shapes, any element
/// types, fp32 math, a row with no visible key and no sink logit gets o = 0 and
/// lse = -inf). key_weights, when requested, come from a second pass with the lse.
template <class TQ, class TK, class TV, class TO>
void flash_attention(const attention_args<TQ, TK, TV, TO>& args, reference) {
  const detail::checked_call c = detail::check_args("flash_attention", args);
  std::vector<float> own_lse;
  attention_args<TQ, TK, TV, TO> a = args;
  if (detail::is_given(a.kw) && !detail::is_given(a.lse)) {
    own_lse.resize(static_cast<std::size_t>(a.q.extent(0) * a.q.extent(1) * a.q.extent(2)));
    a.lse = tensor_view<float, 3>(own_lse.data(), {a.q.extent(0), a.q.extent(1), a.q.extent(2)});
  }
  const tensor_view<const float, 3> lse(a.lse);
  detail::with_kv_rows(a.k, a.v, [&](const auto& k, const auto& v) {
    detail::flash_reference(c, a, k, v);
    if (detail::is_given(a.kw)) detail::key_weights_pass(c.s, c.batch, a.q, k, a.params, lse, a.kw);
  });
}

/// The reference backend needs no workspace.
template <class TQ, class TK, class TV, class TO>
std::size_t flash_attention_workspace_size(const attention_args<TQ, TK, TV, TO>& args, reference) {
  detail::check_args("flash_attention_workspace_size", args, false);
  return 0;
}

/// flash_attention on the best backend compiled in: cpu_native (the widest arch
/// this translation unit's flags allow) when xsimd is available, else the reference.
template <class TQ, class KS, class VS, class TO>
void flash_attention(tensor_view<TQ, 4> q, const KS& k, const VS& v, tensor_view<TO, 4> o,
                     const attention_params& params = {}, tensor_view<float, 3> lse = {},
                     const key_weights& kw = {}) {
  flash_attention(q, k, v, o, params, lse, kw, cpu_native{});
}

template <class TQ, class TK, class TV, class TO>
void flash_attention(const attention_args<TQ, TK, TV, TO>& args) {
  flash_attention(args, cpu_native{});
}

ATTNKIT_END_NAMESPACE
