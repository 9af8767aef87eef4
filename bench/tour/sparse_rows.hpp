// Tour rows for block-sparse attention on cpu_native, all
// threads: HiP over the flash.prefill shape (its search and the attention,
// timed together) and Quest over the flash.decode GQA 4 shape (page bounds
// kept on append, so a step is the selection and the attention; one list per
// GQA group). GFLOP/s counts the (row, key) pairs the layout and the causal
// mask let through; the error compares the first GQA group with the fp64
// attention over exactly those keys (the executor's own error: the f16 K/V
// bound applies).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/sparse/hip.hpp"
#include "attnkit/attention/sparse/quest.hpp"
#include "support/compare.hpp"
#include "support/reference_attention.hpp"
#include "support/sparse_layouts.hpp"
#include "support/timing.hpp"
#include "support/workloads.hpp"
#include "tour/flash_rows.hpp"
#include "tour/tour.hpp"

namespace attnkit::tour {

template <class Select>
row sparse_row(const char* kernel, const std::string& what, const bench::problem& p, bound b, const environment& env,
               Select&& select) {
  using backend_t = cpu_native;
  bench::attention_inputs<float, half, half, float> in(p, test::fresh_seed());
  auto a = make_attention_args(in.q.cview(), in.k.cview(), in.v.cview(), in.o.view);
  a.params.causal = true;
  backend_t backend;
  const owned_layout first = select(a, backend);
  a.sparse = first.view();
  std::vector<unsigned char> scratch(flash_attention_workspace_size(a, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  row r;
  r.kernel = kernel;
  r.shape = bench::shape_string(p) + " " + what;
  r.dtype = "q f32 kv f16 o f32";
  r.threads = backend.exec.concurrency();
  r.bounded_by = b;
  r.median_ms = bench::median_ms(
      [&] {
        const owned_layout l = select(a, backend);
        auto s = a;
        s.sparse = l.view();
        flash_attention(s, backend);
      },
      env.quick ? 2 : 3, env.quick ? 0.0 : 0.5);
  const double pairs = bench::visited_pairs(first, p);
  env.rate(r, 4.0 * p.d * pairs, pairs / (p.hq * p.sq) * p.hkv * (p.d + p.dv) * 2.0);
  flash_attention(a, backend);  // o under `first`, for the error
  const std::int64_t group = p.hq / p.hkv;
  test::oracle_options opt;
  opt.allowed = [&](std::int64_t, std::int64_t h, std::int64_t i, std::int64_t j) { return bench::layout_sees(first, p, h, i, j); };
  const auto sample = [](const auto& t, std::int64_t heads) { return t.cview().slice(1, 0, heads); };
  r.rel_err = test::compare_output(sample(in.o, group), test::reference_attention(sample(in.q, group), sample(in.k, 1),
                                                                                  sample(in.v, 1), a.params, opt))
                  .rel_l2;
  r.tolerance = 2e-3;  // f16 K/V (DESIGN §7)
  return r;
}

inline std::vector<tour_case> sparse_cases() {
  return {{"sparse.hip",
           [](const environment& env) {
             const bench::problem p = flash_prefill_problem(env);
             hip_options o;
             o.top_k = p.skv / 8;
             o.sinks = 64;
             o.window = p.skv / 16;
             return sparse_row("sparse.hip", "top_k " + std::to_string(o.top_k), p, bound::compute, env,
                               [o](const auto& a, const auto& be) { return hip_layout(a, o, be); });
           }},
          {"sparse.quest", [](const environment& env) {
             const bench::problem p = flash_decode_problem(env, 4);
             auto bounds = std::make_shared<quest_bounds>();
             quest_options o;
             o.budget = p.skv / 8;
             o.head_group = p.hq / p.hkv;  // one list per GQA group: each KV head reads budget keys
             return sparse_row("sparse.quest", "budget " + std::to_string(o.budget), p, bound::memory, env,
                               [bounds, o](const auto& a, const auto& be) {
                                 if (bounds->pages() == 0) *bounds = quest_page_bounds(a, 16);  // kept on append
                                 return quest_layout(a, *bounds, o, be.exec);
                               });
           }}};
}

}  // namespace attnkit::tour
