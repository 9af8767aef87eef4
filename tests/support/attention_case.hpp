// One attention test problem: random Q/K/V in a chosen layout and dtype, the
// masks and modifiers to try, and a check of a kernel's output (O, LSE, probs)
// against the fp64 oracle.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/params.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "support/compare.hpp"
#include "support/problem.hpp"
#include "support/random.hpp"
#include "support/reference_attention.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {

/// The masks and modifiers every attention kernel is tested with.
enum class mask_case { none, causal, window, causal_window, sinks_window, softcap, alibi, sink_logit, everything };

inline const char* mask_case_name(mask_case m) {
  switch (m) {
    case mask_case::none: return "none";
    case mask_case::causal: return "causal";
    case mask_case::window: return "window";
    case mask_case::causal_window: return "causal_window";
    case mask_case::sinks_window: return "sinks_window";
    case mask_case::softcap: return "softcap";
    case mask_case::alibi: return "alibi";
    case mask_case::sink_logit: return "sink_logit";
    case mask_case::everything: return "everything";
  }
  return "?";
}

inline std::ostream& operator<<(std::ostream& out, mask_case m) { return out << mask_case_name(m); }

inline const std::vector<mask_case>& all_mask_cases() {
  static const std::vector<mask_case> all = {mask_case::none,          mask_case::causal,       mask_case::window,
                                             mask_case::causal_window, mask_case::sinks_window, mask_case::softcap,
                                             mask_case::alibi,         mask_case::sink_logit,   mask_case::everything};
  return all;
}

/// attention_params with causal masking and nothing else.
inline attention_params causal_params() {
  attention_params p;
  p.causal = true;
  return p;
}

/// attention_params for a mask case; per-head arrays live in `slopes` and `sinks`.
inline attention_params make_params(mask_case m, const problem& pr, std::vector<float>& slopes,
                                    std::vector<float>& sinks, std::mt19937_64& rng) {
  attention_params p;
  const bool all = m == mask_case::everything;
  if (m == mask_case::causal || m == mask_case::causal_window || m == mask_case::sinks_window ||
      m == mask_case::alibi || all)
    p.causal = true;
  if (m == mask_case::window) {
    p.window_left = 5;
    p.window_right = 3;
  }
  if (m == mask_case::causal_window) p.window_left = 16;
  if (m == mask_case::sinks_window || all) {
    p.window_left = 8;
    p.sinks = std::min<std::int64_t>(4, pr.skv);
  }
  if (m == mask_case::softcap || all) {
    p.scale = 2.0f / std::sqrt(static_cast<float>(pr.d));  // large enough that the cap bends scores
    p.softcap = 1.5f;
  }
  if (m == mask_case::alibi || all) {
    slopes.resize(pr.hq);
    for (std::int64_t h = 0; h < pr.hq; ++h) slopes[h] = std::exp2(-8.0f * (h + 1) / pr.hq);
    p.alibi_slopes = tensor_view<const float, 1>(slopes.data(), {pr.hq});
  }
  if (m == mask_case::sink_logit || all) {
    sinks.resize(pr.hq);
    std::normal_distribution<float> dist(1.0f, 1.0f);
    for (auto& s : sinks) s = dist(rng);
    p.sink_logits = tensor_view<const float, 1>(sinks.data(), {pr.hq});
  }
  return p;
}

/// Random Q, K, V for a problem, O poisoned with NaN, and LSE / probs buffers.
template <class TQ, class TK, class TV, class TO>
struct attention_case {
  problem pr;
  bhsd_tensor<TQ> q;
  bhsd_tensor<TK> k;
  bhsd_tensor<TV> v;
  bhsd_tensor<TO> o;
  tensor<float, 3> lse;
  tensor<float, 4> probs;

  attention_case(const problem& p, std::mt19937_64& rng)
      : pr(p),
        q(p.b, p.hq, p.sq, p.d, p.lay),
        k(p.b, p.hkv, p.skv, p.d, p.lay),
        v(p.b, p.hkv, p.skv, p.dv, p.lay),
        o(p.b, p.hq, p.sq, p.dv, p.lay),
        lse({p.b, p.hq, p.sq}, std::numeric_limits<float>::quiet_NaN()),
        probs({p.b, p.hq, p.sq, p.skv}, std::numeric_limits<float>::quiet_NaN()) {
    fill_normal(q.storage.data(), q.storage.size(), rng);
    fill_normal(k.storage.data(), k.storage.size(), rng);
    fill_normal(v.storage.data(), v.storage.size(), rng);
    const TO nan = from_float<TO>(std::numeric_limits<float>::quiet_NaN());
    std::fill_n(o.storage.data(), o.storage.size(), nan);
  }

  reference_result oracle(const attention_params& params) const {
    return reference_attention(q.cview(), k.cview(), v.cview(), params);
  }

  /// Checks O, LSE and (when `with_probs`) the probabilities against the oracle at tolerance tol.
  void expect_matches(const reference_result& ref, double tol, bool with_probs) const {
    const error_stats e = compare_output(o.view, ref);
    EXPECT_TRUE(e.within(tol)) << "rel_l2 " << e.rel_l2 << " max_abs " << e.max_abs << " ref_max " << e.ref_max
                               << " finite " << e.finite << " tol " << tol;
    double lse_err = 0, prob_err = 0;
    for (std::int64_t b = 0; b < pr.b; ++b)
      for (std::int64_t h = 0; h < pr.hq; ++h)
        for (std::int64_t i = 0; i < pr.sq; ++i) {
          const double r = ref.row_lse(b, h, i), x = lse(b, h, i);
          if (std::isinf(r)) {
            EXPECT_EQ(x, r) << "lse at (" << b << "," << h << "," << i << ")";
          } else {
            keep_worst(lse_err, std::abs(x - r) / std::max(1.0, std::abs(r)));
          }
          if (with_probs)
            for (std::int64_t j = 0; j < pr.skv; ++j)
              keep_worst(prob_err, std::abs(probs(b, h, i, j) - ref.prob(b, h, i, j)));
        }
    EXPECT_LE(lse_err, tol);
    EXPECT_LE(prob_err, tol);
  }
};

/// The (sq, skv, mask) sweep every kernel runs: awkward sizes around tile and lane edges.
using size_mask_param = std::tuple<std::int64_t, std::int64_t, mask_case>;

inline auto size_mask_sweep() {
  return ::testing::Combine(::testing::Values(1, 7, 31, 127, 300), ::testing::Values(1, 7, 31, 127, 300),
                            ::testing::ValuesIn(all_mask_cases()));
}

inline std::string size_mask_name(const ::testing::TestParamInfo<size_mask_param>& info) {
  return "sq" + std::to_string(std::get<0>(info.param)) + "_skv" + std::to_string(std::get<1>(info.param)) + "_" +
         mask_case_name(std::get<2>(info.param));
}

/// Runs a kernel on a random problem with one mask case and checks it against the
/// oracle at the tolerance for its types. run(c, params) calls the kernel on case c,
/// writing c.o and c.lse (and c.probs when with_probs).
template <class TQ, class TK, class TV, class TO, class Run>
void check_against_oracle(const problem& pr, mask_case m, Run&& run, bool with_probs) {
  seeded_rng seeded;
  attention_case<TQ, TK, TV, TO> c(pr, seeded.rng);
  std::vector<float> slopes, sinks;
  const attention_params params = make_params(m, pr, slopes, sinks, seeded.rng);
  run(c, params);
  c.expect_matches(c.oracle(params), tolerance_for<TQ, TK, TV, TO>(), with_probs);
}

/// Element types of q, k, v, o and the mask case a dtype test pairs them with.
template <class TQ, class TK, class TV, class TO, mask_case M>
struct dtype_mix {
  using q = TQ;
  using k = TK;
  using v = TV;
  using o = TO;
  static constexpr mask_case mask = M;
};

template <class... Mix>
struct mix_list {};

/// f(Mix{}) for each mix of the list.
template <class... Mix, class F>
void for_each_mix(mix_list<Mix...>, F&& f) {
  (f(Mix{}), ...);
}

/// The reduced-precision mixes every kernel is tested with (f32 is the default elsewhere).
using reduced_precision_mixes =
    mix_list<dtype_mix<half, half, half, half, mask_case::everything>,
             dtype_mix<bfloat16, bfloat16, bfloat16, bfloat16, mask_case::causal>,
             dtype_mix<float, half, half, float, mask_case::sinks_window>,
             dtype_mix<float, bfloat16, bfloat16, bfloat16, mask_case::softcap>,
             dtype_mix<bfloat16, float, half, float, mask_case::alibi>>;

}  // namespace attnkit::test
