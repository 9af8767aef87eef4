// key_weights: how much attention each key received, the signal that score-based
// KV eviction (H2O, A2SF, SnapKV, TOVA) feeds on.
//
//   out(b, w, j) = sum over heads h of w, sum over query rows i of  row_weight(i) * p(b, h, i, j)
//
// where p = exp(s - lse) is the normalized attention weight of query i on key j
// (0 where masked; a learned sink logit is part of lse), and the heads of w are
// {w} when out.extent(1) == hq, or the GQA group of KV head w when
// out.extent(1) == hkv. Rows weigh 1 unless row_weights is given: A2SF passes
// alpha^(sq-1-i), SnapKV the indicator of its observation window.
//
// flash_attention emits it from the attention call itself: decode keeps the
// scores it computed and normalizes them once the row's lse is known; prefill
// runs a second pass over QK^T with the lse of the first, one key tile at a
// time, so no sq x skv buffer ever exists. attention_key_weights is that second
// pass on its own, for an lse obtained elsewhere.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "attnkit/attention/key_weights_arg.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/schedule.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/attention/variant.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

namespace detail {

/// Every check of attention_key_weights; returns its shape (dv = 0).
template <class TQ, class TK>
attention_shape check_key_weights_call(const char* fn, const tensor_view<TQ, 4>& q, const tensor_view<TK, 4>& k,
                                       const attention_params& params, const tensor_view<const float, 3>& lse,
                                       const key_weights& kw) {
  static_assert(is_element_type_v<std::remove_const_t<TQ>> && is_element_type_v<std::remove_const_t<TK>>,
                "q and k must hold float, half or bfloat16");
  check_view(fn, "q", q, true);
  check_view(fn, "k", k, true);
  const attention_shape s{q.extent(0), q.extent(1), k.extent(1), q.extent(2), k.extent(2), q.extent(3), 0};
  check_extent(fn, "k", k, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "k", k, 3, "d", s.d, "q.extent(3)");
  check_heads(fn, s.hq, s.hkv, "k.extent(1)");
  check_head_dims(fn, s.d, 1);
  check_view(fn, "lse", lse, false);
  check_extent(fn, "lse", lse, 0, "b", s.b, "q.extent(0)");
  check_extent(fn, "lse", lse, 1, "hq", s.hq, "q.extent(1)");
  check_extent(fn, "lse", lse, 2, "sq", s.sq, "q.extent(2)");
  check_params(fn, params, s);
  ATTNKIT_CHECK(is_given(kw), fn, ": key_weights.out must be given");
  check_key_weights(fn, kw, s, s.sq);
  return s;
}

/// The reference second pass over either form of keys (KS: strided_kv or
/// paged_rows): recomputes each visible score and adds row_weight(i) *
/// exp(s - lse) to its key.
template <class TQ, class KS>
void key_weights_pass(const attention_shape& s, const attention_batch& batch, const tensor_view<TQ, 4>& q,
                      const KS& k, const attention_params& params, const tensor_view<const float, 3>& lse,
                      const key_weights& kw) {
  const std::int64_t group = s.hq / s.hkv;
  for (std::int64_t b = 0; b < s.b; ++b)
    for (std::int64_t w = 0; w < kw.out.extent(1); ++w)
      for (std::int64_t j = 0; j < kw.out.extent(2); ++j) kw.out(b, w, j) = 0.0f;

  for (std::int64_t b = 0; b < s.b; ++b)
    for (std::int64_t h = 0; h < s.hq; ++h) {
      const std::int64_t len = k.length(b), qb = batch.q_batch(b), r0 = batch.row0(b);
      const attention_variant var = batch.variant(params, b, len, s.d, h);
      const std::int64_t w = key_weights_row(kw, h, s.hq, group);
      for (std::int64_t i = 0; i < batch.rows(b); ++i) {
        const float weight = row_weight(kw, batch.weight_row(b, i)), row_lse = lse(qb, h, r0 + i);
        if (weight == 0.0f || row_lse == -std::numeric_limits<float>::infinity()) continue;
        for (std::int64_t j = 0; j < len; ++j) {
          if (!var.mask.visible(i, j)) continue;
          const auto* kr = k.row(b, h / group, j);
          const float ks = k.scale(b, h / group, j);  // 1 unless quantized
          float dot = 0.0f;
          for (std::int64_t x = 0; x < s.d; ++x) dot += to_float(q(qb, h, r0 + i, x)) * (to_float(kr[x]) * ks);
          kw.out(b, w, j) += weight * std::exp(var.score(dot, h, var.mask.position(i), var.mask.key_position(j)) -
                                               row_lse);
        }
      }
    }
}

}  // namespace detail

/// The second pass on the reference backend (key_weights_pass). lse is what
/// the attention call over the same q, k and params returned.
template <class TQ, class TK>
void attention_key_weights(tensor_view<TQ, 4> q,  // (b, hq, sq, d)
                           tensor_view<TK, 4> k,  // (b, hkv, skv, d)
                           const attention_params& params,
                           tensor_view<const float, 3> lse,  // (b, hq, sq)
                           const key_weights& kw, reference) {
  constexpr const char* fn = "attention_key_weights";
  const attention_shape s = detail::check_key_weights_call(fn, q, k, params, lse, kw);
  detail::attention_batch batch;
  batch.count = s.b;
  batch.sq = s.sq;
  detail::key_weights_pass(s, batch, q, detail::strided_kv<TK>{k, {}}, params, lse, kw);
}

ATTNKIT_END_NAMESPACE
