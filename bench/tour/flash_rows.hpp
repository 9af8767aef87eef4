// Tour rows for flash_attention on cpu_native, all threads, with a
// caller workspace.
#pragma once

#include <utility>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "tour/attention_row.hpp"

namespace attnkit::tour {

template <class TQ, class TK, class TV, class TO>
row run_flash(const char* kernel, const bench::problem& p, const attention_params& params, bound b,
              const environment& env) {
  using backend_t = cpu_native;
  return attention_row<TQ, TK, TV, TO>(
      kernel, p, params, backend_t{}.exec.concurrency(), b, env, [&](const auto& in) {
        backend_t backend;
        std::vector<unsigned char> scratch(
            flash_attention_workspace_size(in.q.cview(), in.k.cview(), in.v.cview(), backend));
        backend.scratch = {scratch.data(), scratch.size()};  // moving the vector keeps its buffer
        return [&in, &params, backend, scratch = std::move(scratch)] {
          flash_attention(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view, params, {}, backend);
        };
      });
}

/// Prefill: 32 query heads over 8 KV heads (GQA 4), d = 128, causal.
inline bench::problem flash_prefill_problem(const environment& env) {
  bench::problem p;
  p.hq = 32, p.hkv = 8, p.sq = p.skv = env.quick ? 256 : 2048, p.d = p.dv = 128;
  return p;
}

/// Decode: one query row per head over a long f16 cache, 8 KV heads, d = 128.
/// skv 16384 (67 MB of K and V) stays partly in a large L3; 131072 (537 MB) is
/// read from DRAM.
inline bench::problem flash_decode_problem(const environment& env, std::int64_t group, std::int64_t skv = 16384) {
  bench::problem p;
  p.hkv = 8, p.hq = 8 * group, p.sq = 1, p.skv = env.quick ? 2048 : skv, p.d = p.dv = 128;
  return p;
}

inline std::vector<tour_case> flash_cases() {
  attention_params causal;
  causal.causal = true;
  std::vector<tour_case> cases{
      {"flash.prefill",
       [=](const environment& env) {
         return run_flash<float, float, float, float>("flash.prefill", flash_prefill_problem(env), causal,
                                                      bound::compute, env);
       }},
      {"flash.prefill",
       [=](const environment& env) {
         return run_flash<bfloat16, bfloat16, bfloat16, bfloat16>("flash.prefill", flash_prefill_problem(env), causal,
                                                                  bf16_compute_bound(env.all_threads), env);
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
  for (std::int64_t group : {1, 4, 8})
    cases.push_back({"flash.decode", [group](const environment& env) {
                       return run_flash<float, half, half, float>(
                           "flash.decode", flash_decode_problem(env, group, 131072), {}, bound::memory, env);
                     }});
  return cases;
}

}  // namespace attnkit::tour
