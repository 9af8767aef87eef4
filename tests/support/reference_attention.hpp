// The fp64 attention oracle: a plain triple loop, written from the definition
// in attention/params.hpp and sharing no code with the kernels under test.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

#include "attnkit/attention/params.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/tensor_view.hpp"

namespace attnkit::test {

struct reference_result {
  std::int64_t b = 0, hq = 0, sq = 0, skv = 0, dv = 0;
  std::vector<double> o;      // [b][hq][sq][dv]
  std::vector<double> lse;    // [b][hq][sq]
  std::vector<double> probs;  // [b][hq][sq][skv]

  double out(std::int64_t bi, std::int64_t h, std::int64_t i, std::int64_t c) const {
    return o[((bi * hq + h) * sq + i) * dv + c];
  }
  double row_lse(std::int64_t bi, std::int64_t h, std::int64_t i) const { return lse[(bi * hq + h) * sq + i]; }
  double prob(std::int64_t bi, std::int64_t h, std::int64_t i, std::int64_t j) const {
    return probs[((bi * hq + h) * sq + i) * skv + j];
  }
};

/// Positions and an extra mask for the oracle. Query row i of batch b sits at
/// q_pos[b] + i and key j at k_pos[b] + j (empty: skv - sq + i and j); `allowed`
/// (when set) must also say yes for key j to be visible.
struct oracle_options {
  std::vector<std::int64_t> q_pos, k_pos;
  std::function<bool(std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j)> allowed;
};

template <class TQ, class TK, class TV>
reference_result reference_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
                                     const attention_params& p, const oracle_options& opt = {}) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  const std::int64_t B = q.extent(0), HQ = q.extent(1), SQ = q.extent(2), D = q.extent(3);
  const std::int64_t HKV = k.extent(1), SKV = k.extent(2), DV = v.extent(3);
  reference_result r;
  r.b = B, r.hq = HQ, r.sq = SQ, r.skv = SKV, r.dv = DV;
  r.o.assign(B * HQ * SQ * DV, 0.0);
  r.lse.assign(B * HQ * SQ, -inf);
  r.probs.assign(B * HQ * SQ * SKV, 0.0);
  const double scale = p.scale ? static_cast<double>(*p.scale) : 1.0 / std::sqrt(static_cast<double>(D));

  std::vector<double> logit(SKV);
  std::vector<char> allowed(SKV);
  for (std::int64_t bi = 0; bi < B; ++bi)
    for (std::int64_t h = 0; h < HQ; ++h) {
      const std::int64_t kvh = h * HKV / HQ;
      const bool has_sink = !p.sink_logits.empty();
      const double sink = has_sink ? static_cast<double>(p.sink_logits(h)) : -inf;
      const std::int64_t k0 = opt.k_pos.empty() ? 0 : opt.k_pos[bi];
      const std::int64_t q0 = opt.q_pos.empty() ? k0 + SKV - SQ : opt.q_pos[bi];
      for (std::int64_t i = 0; i < SQ; ++i) {
        const std::int64_t pos = q0 + i;
        double best = sink;
        for (std::int64_t j = 0; j < SKV; ++j) {
          const std::int64_t kpos = k0 + j;
          bool ok = !opt.allowed || opt.allowed(bi, h, i, j);
          if (p.causal && kpos > pos) ok = false;
          if (p.window_right != attention_params::unbounded && kpos > pos + p.window_right) ok = false;
          if (p.window_left != attention_params::unbounded && kpos < pos - p.window_left && kpos >= p.sinks) ok = false;
          allowed[j] = ok;
          if (!ok) continue;
          double x = 0;
          for (std::int64_t c = 0; c < D; ++c)
            x += static_cast<double>(to_float(q(bi, h, i, c))) * static_cast<double>(to_float(k(bi, kvh, j, c)));
          x *= scale;
          if (p.softcap > 0) x = p.softcap * std::tanh(x / p.softcap);
          // ALiBi penalizes distance either way (keys after the query too, when visible).
          if (!p.alibi_slopes.empty()) x -= static_cast<double>(p.alibi_slopes(h)) * std::abs(static_cast<double>(kpos - pos));
          logit[j] = x;
          if (x > best) best = x;
        }
        if (best == -inf) continue;  // nothing to attend to: o = 0, lse = -inf
        double z = has_sink ? std::exp(sink - best) : 0.0;
        for (std::int64_t j = 0; j < SKV; ++j)
          if (allowed[j]) z += std::exp(logit[j] - best);
        r.lse[(bi * HQ + h) * SQ + i] = best + std::log(z);
        for (std::int64_t j = 0; j < SKV; ++j) {
          if (!allowed[j]) continue;
          const double w = std::exp(logit[j] - best) / z;
          r.probs[((bi * HQ + h) * SQ + i) * SKV + j] = w;
          for (std::int64_t c = 0; c < DV; ++c)
            r.o[((bi * HQ + h) * SQ + i) * DV + c] += w * static_cast<double>(to_float(v(bi, kvh, j, c)));
        }
      }
    }
  return r;
}

}  // namespace attnkit::test
