// Tour rows for dense_attention (the reference backend, one thread).
#pragma once

#include <vector>

#include "attnkit/attention/dense.hpp"
#include "tour/attention_row.hpp"

namespace attnkit::tour {

template <class TQ, class TK, class TV, class TO>
row run_dense(const char* kernel, const bench::problem& p, const attention_params& params, bound b,
              const environment& env) {
  return attention_row<TQ, TK, TV, TO>(kernel, p, params, 1, b, env, [&](const auto& in) {
    return [&] { dense_attention(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view, params); };
  });
}

/// The prefill problem: 8 query heads over 2 KV heads (GQA 4), d = 128, causal.
inline bench::problem dense_prefill_problem(const environment& env) {
  bench::problem p;
  p.hq = 8, p.hkv = 2, p.sq = p.skv = env.quick ? 128 : 512, p.d = p.dv = 128;
  return p;
}

inline attention_params causal_params() {
  attention_params params;
  params.causal = true;
  return params;
}

inline std::vector<tour_case> dense_cases() {
  return {
      {"dense.prefill",
       [](const environment& env) {
         return run_dense<float, float, float, float>("dense.prefill", dense_prefill_problem(env), causal_params(),
                                                      bound::compute, env);
       }},
      {"dense.prefill",
       [](const environment& env) {
         return run_dense<bfloat16, bfloat16, bfloat16, bfloat16>("dense.prefill", dense_prefill_problem(env),
                                                                  causal_params(), bound::compute, env);
       }},
      {"dense.decode",
       [](const environment& env) {
         bench::problem p;  // one decode step of a Llama-3-8B-like layer: 32 query heads over 8 KV heads
         p.hq = 32, p.hkv = 8, p.sq = 1, p.skv = env.quick ? 512 : 4096, p.d = p.dv = 128;
         return run_dense<float, half, half, float>("dense.decode", p, {}, bound::memory, env);
       }},
  };
}

}  // namespace attnkit::tour
