// Tour row for decode over an int8 KV cache (a scale per row): the flash.decode
// shape with K and V quantized, on cpu_native, all threads. GB/s
// counts the bytes read (int8 data and fp32 row scales); the error compares
// the first GQA group with the fp64 attention over the values the cache holds
// (the kernel's own error: the fp32 bound applies).
#pragma once

#include <cstdint>
#include <vector>

#include "attnkit/attention/flash.hpp"
#include "support/compare.hpp"
#include "support/quantized_kv.hpp"
#include "support/reference_attention.hpp"
#include "support/timing.hpp"
#include "tour/flash_rows.hpp"
#include "tour/tour.hpp"

namespace attnkit::tour {

inline row run_int8_decode(const environment& env, std::int64_t group) {
  using backend_t = cpu_native;
  const bench::problem p = flash_decode_problem(env, group);
  std::mt19937_64 rng(test::fresh_seed());
  const test::quantized_kv<std::int8_t> k(1, p.hkv, p.skv, p.d, rng), v(1, p.hkv, p.skv, p.dv, rng);
  tensor<float, 4> q({1, p.hq, 1, p.d}), o({1, p.hq, 1, p.dv});
  test::fill_normal(q.data(), q.size(), rng);
  auto a = make_attention_args(q.cview(), k.data.cview(), v.data.cview(), o.view());
  a.k.scales = k.scales();
  a.v.scales = v.scales();
  backend_t backend;
  std::vector<unsigned char> scratch(flash_attention_workspace_size(a, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  row r;
  r.kernel = "flash.decode";
  r.shape = bench::shape_string(p) + " int8 kv";
  r.dtype = "q f32 kv int8 o f32";
  r.threads = backend.exec.concurrency();
  r.bounded_by = bound::memory;
  r.median_ms = bench::median_ms([&] { flash_attention(a, backend); }, env.quick ? 2 : 5, env.quick ? 0.0 : 0.5);
  env.rate(r, bench::attention_flops(p, false), static_cast<double>(p.hkv) * p.skv * (p.d + p.dv + 2 * 4));
  const auto sample = [](const tensor<float, 4>& t, std::int64_t heads) { return t.cview().slice(1, 0, heads); };
  r.rel_err = test::compare_output(sample(o, group),
                                   test::reference_attention(sample(q, group), sample(k.values, 1),
                                                             sample(v.values, 1), a.params))
                  .rel_l2;
  r.tolerance = 1e-5;  // over the values the cache holds (DESIGN §7)
  return r;
}

inline std::vector<tour_case> quant_cases() {
  return {{"flash.decode", [](const environment& env) { return run_int8_decode(env, 1); }},
          {"flash.decode", [](const environment& env) { return run_int8_decode(env, 4); }}};
}

}  // namespace attnkit::tour
