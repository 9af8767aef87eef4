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

#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/params.hpp"
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

/// o = softmax(score(q, k)) v, tiled; lse (b, hq, sq) is optional. Same contract as
/// dense_attention (GQA by shapes, any element types, fp32 math, a row with no
/// visible key and no sink logit gets o = 0 and lse = -inf).
template <class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q,  // (b, hq, sq, d)
                     tensor_view<TK, 4> k,  // (b, hkv, skv, d)
                     tensor_view<TV, 4> v,  // (b, hkv, skv, dv)
                     tensor_view<TO, 4> o,  // (b, hq, sq, dv)
                     const attention_params& params, tensor_view<float, 3> lse,  // (b, hq, sq) or empty
                     reference) {
  const attention_shape s = detail::check_attention_call("flash_attention", q, k, v, o, params, lse);
  const bool want_lse = detail::is_given(lse);

  constexpr std::int64_t tile_q = 16, tile_kv = 32;
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  const attention_variant var = make_variant(params, s.sq, s.skv, s.d);
  const std::int64_t group = s.hq / (s.hkv > 0 ? s.hkv : 1);
  std::vector<softmax_state> row(tile_q);                          // per query row of the tile
  std::vector<float> acc(static_cast<std::size_t>(tile_q * s.dv));  // (tile_q, dv) unnormalized output
  std::vector<float> p(static_cast<std::size_t>(tile_q * tile_kv));  // (tile_q, tile_kv) scores, then weights

  for (std::int64_t b = 0; b < s.b; ++b)
    for (std::int64_t h = 0; h < s.hq; ++h) {
      const auto qh = slice_head(q, b, h);          // (sq, d)
      const auto kh = slice_head(k, b, h / group);  // (skv, d)
      const auto vh = slice_head(v, b, h / group);  // (skv, dv)
      const auto oh = slice_head(o, b, h);          // (sq, dv)
      for (std::int64_t i0 = 0; i0 < s.sq; i0 += tile_q) {
        const std::int64_t rows = std::min(tile_q, s.sq - i0);
        std::fill(row.begin(), row.end(), softmax_state{});
        std::fill(acc.begin(), acc.end(), 0.0f);

        for (std::int64_t j0 = 0; j0 < s.skv; j0 += tile_kv) {
          const std::int64_t cols = std::min(tile_kv, s.skv - j0);
          const tile_state state = var.mask.classify(i0, i0 + rows, j0, j0 + cols);
          if (state == tile_state::empty) continue;
          for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t i = i0 + r;
            float* pr = &p[r * tile_kv];
            // Scores of this row against the tile's keys, and their max.
            float block_max = neg_inf;
            for (std::int64_t c = 0; c < cols; ++c) {
              const std::int64_t j = j0 + c;
              pr[c] = neg_inf;
              if (state == tile_state::partial && !var.mask.visible(i, j)) continue;
              float dot = 0.0f;
              for (std::int64_t x = 0; x < s.d; ++x) dot += to_float(qh(i, x)) * to_float(kh(j, x));
              pr[c] = var.score(dot, h, var.mask.position(i), j);
              block_max = std::max(block_max, pr[c]);
            }
            // Move the row's reference max, rescale what it has so far, add this tile.
            const float alpha = row[r].rescale(block_max);
            float* ar = &acc[r * s.dv];
            for (std::int64_t x = 0; x < s.dv; ++x) ar[x] *= alpha;
            if (row[r].m == neg_inf) continue;  // nothing visible yet
            for (std::int64_t c = 0; c < cols; ++c) {
              const float w = std::exp(pr[c] - row[r].m);
              row[r].l += w;
              if (w == 0.0f) continue;
              for (std::int64_t x = 0; x < s.dv; ++x) ar[x] += w * to_float(vh(j0 + c, x));
            }
          }
        }

        // The sink logit joins the denominator only, then each row is normalized.
        const float sink = var.normalizer.sink(h);
        for (std::int64_t r = 0; r < rows; ++r) {
          if (sink != neg_inf) {
            const float alpha = row[r].rescale(sink);
            for (std::int64_t x = 0; x < s.dv; ++x) acc[r * s.dv + x] *= alpha;
            row[r].l += std::exp(sink - row[r].m);
          }
          const float inv_l = row[r].l > 0.0f ? 1.0f / row[r].l : 0.0f;
          for (std::int64_t x = 0; x < s.dv; ++x) oh(i0 + r, x) = from_float<TO>(acc[r * s.dv + x] * inv_l);
          if (want_lse) lse(b, h, i0 + r) = row[r].lse();
        }
      }
    }
}

/// The reference call that also fills key_weights (key_weights.hpp): the
/// attention, then the second pass with the lse it returned.
template <class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const attention_params& params, tensor_view<float, 3> lse, const key_weights& kw, reference) {
  const attention_shape s = detail::check_attention_call("flash_attention", q, k, v, o, params, lse);
  detail::check_key_weights("flash_attention", kw, s);
  std::vector<float> own_lse;
  if (detail::is_given(kw) && !detail::is_given(lse)) {
    own_lse.resize(static_cast<std::size_t>(s.b * s.hq * s.sq));
    lse = tensor_view<float, 3>(own_lse.data(), {s.b, s.hq, s.sq});
  }
  flash_attention(q, k, v, o, params, lse, reference{});
  if (detail::is_given(kw)) attention_key_weights(q, k, params, tensor_view<const float, 3>(lse), kw, reference{});
}

/// flash_attention on the best backend compiled in: cpu<xsimd::default_arch> (the
/// widest arch this translation unit's flags allow, on the default executor) when
/// xsimd is available, else the reference backend.
template <class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const attention_params& params = {}, tensor_view<float, 3> lse = {},
                     const key_weights& kw = {}) {
#if ATTNKIT_HAS_XSIMD
  flash_attention(q, k, v, o, params, lse, kw, cpu<xsimd::default_arch>{});
#else
  flash_attention(q, k, v, o, params, lse, kw, reference{});
#endif
}

ATTNKIT_END_NAMESPACE
