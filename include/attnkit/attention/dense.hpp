// dense_attention: materializing attention. It computes each query row's full
// score vector, softmaxes it and takes the weighted sum of V. It is the oracle
// the tiled kernels are tested against and the way to get the attention map.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "attnkit/attention/params.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/attention/variant.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// o = softmax(score(q, k)) v for every (batch, query head, query row).
///
/// GQA/MQA follow from the shapes: query head h reads KV head h / (hq / hkv).
/// Element types are float, half or bfloat16 independently; arithmetic is in Acc
/// (float, or double for an fp64 result). Optional outputs:
///   lse   (b, hq, sq)       log of the softmax denominator (sink logit included)
///   probs (b, hq, sq, skv)  the normalized attention weights, 0 where masked
/// A row with no visible key and no sink logit gets o = 0 and lse = -inf.
template <class Acc = float, class TQ, class TK, class TV, class TO>
void dense_attention(tensor_view<TQ, 4> q,  // (b, hq, sq, d)
                     tensor_view<TK, 4> k,  // (b, hkv, skv, d)
                     tensor_view<TV, 4> v,  // (b, hkv, skv, dv)
                     tensor_view<TO, 4> o,  // (b, hq, sq, dv)
                     const attention_params& params = {},
                     tensor_view<float, 3> lse = {},    // (b, hq, sq)
                     tensor_view<float, 4> probs = {},  // (b, hq, sq, skv)
                     reference = {}) {
  static_assert(is_element_type_v<std::remove_const_t<TQ>> && is_element_type_v<std::remove_const_t<TK>> &&
                    is_element_type_v<std::remove_const_t<TV>> && is_element_type_v<TO>,
                "q, k, v, o must hold float, half or bfloat16 (o non-const)");
  static_assert(std::is_floating_point_v<Acc>, "Acc is float or double");

  constexpr const char* fn = "dense_attention";
  const attention_shape s = detail::check_qkv(fn, q, k, v);
  detail::check_output(fn, o, s, "v.extent(3)");
  detail::check_lse(fn, lse, s);
  const bool want_probs = detail::is_given(probs);
  if (want_probs) {
    detail::check_view(fn, "probs", probs, false);
    detail::check_extent(fn, "probs", probs, 0, "b", s.b, "q.extent(0)");
    detail::check_extent(fn, "probs", probs, 1, "hq", s.hq, "q.extent(1)");
    detail::check_extent(fn, "probs", probs, 2, "sq", s.sq, "q.extent(2)");
    detail::check_extent(fn, "probs", probs, 3, "skv", s.skv, "k.extent(2)");
  }
  detail::check_params(fn, params, s);
  const bool want_lse = detail::is_given(lse);

  const attention_variant var = make_variant(params, s.sq, s.skv, s.d);
  const std::int64_t group = s.hq / (s.hkv > 0 ? s.hkv : 1);
  constexpr Acc neg_inf = -std::numeric_limits<Acc>::infinity();
  std::vector<Acc> p(static_cast<std::size_t>(s.skv));    // one row of scores, then weights
  std::vector<Acc> acc(static_cast<std::size_t>(s.dv));   // one output row

  for (std::int64_t b = 0; b < s.b; ++b) {
    for (std::int64_t h = 0; h < s.hq; ++h) {
      const auto qh = slice_head(q, b, h);          // (sq, d)
      const auto kh = slice_head(k, b, h / group);  // (skv, d)
      const auto vh = slice_head(v, b, h / group);  // (skv, dv)
      const auto oh = slice_head(o, b, h);          // (sq, dv)
      const Acc sink = static_cast<Acc>(var.normalizer.sink(h));
      for (std::int64_t i = 0; i < s.sq; ++i) {
        const std::int64_t qpos = var.mask.position(i);
        Acc m = sink;
        for (std::int64_t j = 0; j < s.skv; ++j) {
          p[j] = neg_inf;
          if (!var.mask.visible(i, j)) continue;
          Acc dot = 0;
          for (std::int64_t c = 0; c < s.d; ++c)
            dot += static_cast<Acc>(to_float(qh(i, c))) * static_cast<Acc>(to_float(kh(j, c)));
          p[j] = var.score(dot, h, qpos, j);
          m = p[j] > m ? p[j] : m;
        }
        std::fill(acc.begin(), acc.end(), Acc(0));
        Acc row_lse = neg_inf;
        if (m != neg_inf) {  // otherwise nothing is visible: o = 0, lse = -inf, probs = 0
          Acc denom = std::exp(sink - m);
          for (std::int64_t j = 0; j < s.skv; ++j) denom += (p[j] = std::exp(p[j] - m));
          for (std::int64_t j = 0; j < s.skv; ++j) {
            p[j] /= denom;
            if (p[j] == Acc(0)) continue;
            for (std::int64_t c = 0; c < s.dv; ++c) acc[c] += p[j] * static_cast<Acc>(to_float(vh(j, c)));
          }
          row_lse = m + std::log(denom);
        }
        for (std::int64_t c = 0; c < s.dv; ++c) oh(i, c) = from_float<TO>(static_cast<float>(acc[c]));
        if (want_lse) lse(b, h, i) = static_cast<float>(row_lse);
        if (want_probs)
          for (std::int64_t j = 0; j < s.skv; ++j) probs(b, h, i, j) = m != neg_inf ? static_cast<float>(p[j]) : 0.0f;
      }
    }
  }
}

ATTNKIT_END_NAMESPACE
