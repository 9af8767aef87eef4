// Tour rows for flash_attention on cpu<xsimd::default_arch>, all threads, with a
// caller workspace. The error column compares the last rows of the first GQA
// group with the fp64 oracle (bottom-right masks keep their alignment when
// leading query rows are dropped), which keeps the oracle quick on large shapes.
#pragma once

#include <algorithm>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "support/compare.hpp"
#include "support/reference_attention.hpp"
#include "support/timing.hpp"
#include "support/workloads.hpp"
#include "tour/tour.hpp"

namespace attnkit::tour {

template <class TQ, class TK, class TV, class TO>
row run_flash(const char* kernel, const bench::problem& p, const attention_params& params, bound b,
              const environment& env) {
  bench::attention_inputs<TQ, TK, TV, TO> in(p, test::fresh_seed());
  cpu<xsimd::default_arch> backend;
  std::vector<unsigned char> scratch(flash_attention_workspace_size(in.q.cview(), in.k.cview(), in.v.cview(), backend));
  backend.scratch = {scratch.data(), scratch.size()};
  row r;
  r.kernel = kernel;
  r.shape = bench::shape_string(p) + (params.causal ? " causal" : "");
  r.dtype = dtype_label<TQ, TK, TV, TO>();
  r.threads = backend.exec.concurrency();
  r.bounded_by = b;
  r.median_ms = bench::median_ms(
      [&] { flash_attention(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view, params, {}, backend); },
      env.quick ? 2 : 5, env.quick ? 0.0 : 0.5);
  env.rate(r, bench::attention_flops(p, params.causal), bench::kv_bytes(p, sizeof(TK), sizeof(TV)));

  const std::int64_t group = p.hq / p.hkv, last = std::min<std::int64_t>(p.sq, 64);
  const auto q = in.q.cview().slice(0, 0, 1).slice(1, 0, group).slice(2, p.sq - last, p.sq);
  const auto o = in.o.cview().slice(0, 0, 1).slice(1, 0, group).slice(2, p.sq - last, p.sq);
  const auto k = in.k.cview().slice(0, 0, 1).slice(1, 0, 1);
  const auto v = in.v.cview().slice(0, 0, 1).slice(1, 0, 1);
  r.rel_err = test::compare_output(o, test::reference_attention(q, k, v, params)).rel_l2;
  r.tolerance = test::tolerance_for<TQ, TK, TV, TO>();
  return r;
}

/// Prefill: 32 query heads over 8 KV heads (GQA 4), d = 128, causal.
inline bench::problem flash_prefill_problem(const environment& env) {
  bench::problem p;
  p.hq = 32, p.hkv = 8, p.sq = p.skv = env.quick ? 256 : 2048, p.d = p.dv = 128;
  return p;
}

/// Decode: one query row per head over a long f16 cache, 8 KV heads, d = 128.
inline bench::problem flash_decode_problem(const environment& env, std::int64_t group) {
  bench::problem p;
  p.hkv = 8, p.hq = 8 * group, p.sq = 1, p.skv = env.quick ? 2048 : 16384, p.d = p.dv = 128;
  return p;
}

inline std::vector<tour_case> flash_cases() {
  attention_params causal;
  causal.causal = true;
  return {
      {"flash.prefill",
       [=](const environment& env) {
         return run_flash<float, float, float, float>("flash.prefill", flash_prefill_problem(env), causal,
                                                      bound::compute, env);
       }},
      {"flash.prefill",
       [=](const environment& env) {
         return run_flash<bfloat16, bfloat16, bfloat16, bfloat16>("flash.prefill", flash_prefill_problem(env), causal,
                                                                  bound::compute, env);
       }},
      {"flash.decode",
       [](const environment& env) {
         return run_flash<float, half, half, float>("flash.decode", flash_decode_problem(env, 1), {}, bound::memory,
                                                    env);
       }},
      {"flash.decode",
       [](const environment& env) {
         return run_flash<float, half, half, float>("flash.decode", flash_decode_problem(env, 4), {}, bound::memory,
                                                    env);
       }},
  };
}

}  // namespace attnkit::tour
