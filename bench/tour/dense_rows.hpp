// Tour rows for dense_attention (the reference backend, one thread).
#pragma once

#include <vector>

#include "attnkit/attention/dense.hpp"
#include "support/compare.hpp"
#include "support/reference_attention.hpp"
#include "support/timing.hpp"
#include "support/workloads.hpp"
#include "tour/tour.hpp"

namespace attnkit::tour {

template <class TQ, class TK, class TV, class TO>
row run_dense(const char* kernel, const bench::problem& p, const attention_params& params, bound b,
              const environment& env) {
  bench::attention_inputs<TQ, TK, TV, TO> in(p, test::fresh_seed());
  row r;
  r.kernel = kernel;
  r.shape = bench::shape_string(p) + (params.causal ? " causal" : "");
  r.dtype = dtype_label<TQ, TK, TV, TO>();
  r.threads = 1;
  r.bounded_by = b;
  r.median_ms = bench::median_ms([&] { dense_attention(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view, params); },
                                 env.quick ? 2 : 5, env.quick ? 0.0 : 0.5);
  env.rate(r, bench::attention_flops(p, params.causal), bench::kv_bytes(p, sizeof(TK), sizeof(TV)));
  const auto ref = test::reference_attention(in.q.cview(), in.k.cview(), in.v.cview(), params);
  r.rel_err = test::compare_output(in.o.cview(), ref).rel_l2;
  r.tolerance = test::tolerance_for<TQ, TK, TV, TO>();
  return r;
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
