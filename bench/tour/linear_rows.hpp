// Tour rows for linear attention on cpu_native, all threads, with a
// caller workspace: chunkwise prefill of Lightning (decay per head, fla's rule),
// GLA (gates per channel) and BASED (symmetric Taylor map, d 16 -> 153 features,
// V 64) over 8 heads, and one GLA decode step after a long prefill. Prefill FLOPs
// per token and head are 4KV + 2C(K+V) (C = 64, the chunk; BASED: 4D'V + 2C(d+V),
// its intra-chunk product being over d); decode rates count
// the fp32 state read and written (8KV bytes per head), which stays in L2 here.
// The error compares head 0's first rows (prefill) or the step (decode) with
// the fp64 recurrence over the same tokens.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "attnkit/attention/linear/based.hpp"
#include "attnkit/attention/linear/gla.hpp"
#include "attnkit/attention/linear/lightning.hpp"
#include "support/linear_inputs.hpp"
#include "support/linear_oracle.hpp"
#include "support/timing.hpp"
#include "tour/tour.hpp"

namespace attnkit::tour {

enum class linear_kind { lightning, gla, based };

inline row run_linear_prefill(linear_kind kind, const environment& env) {
  constexpr std::int64_t heads = 8, chunk = 64, checked = 512;
  const std::int64_t t = env.quick ? 1024 : 16384, d = kind == linear_kind::based ? 16 : 128;
  const std::int64_t V = kind == linear_kind::based ? 64 : 128;
  std::mt19937_64 rng(test::fresh_seed());
  const test::linear_inputs in(1, heads, t, d, V, rng, false, 16.0f);
  const std::vector<float> log_lambda = lightning_log_decay_fla(heads, 0, 2);
  linear_decay decay;
  if (kind == linear_kind::lightning) decay.per_head = tensor_view<const float, 1>(log_lambda.data(), {heads});
  if (kind == linear_kind::gla) decay.per_channel = in.g_channel.cview();
  tensor<float, 4> o({1, heads, t, V});
  cpu_native backend;
  linear_params p;
  p.chunk = chunk;
  if (kind == linear_kind::lightning) p.scale = 1.0f;
  based_params bp;
  const std::int64_t K = kind == linear_kind::based ? taylor_features(bp.map, d) : d;
  std::vector<unsigned char> scratch(kind == linear_kind::based ? based_attention_workspace_size(d, V, bp, backend)
                                                                 : linear_attention_workspace_size(K, V, p, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  const auto run = [&] {
    if (kind == linear_kind::based)
      based_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), {}, bp, backend);
    else
      linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), decay, {}, p, backend);
  };
  row r;
  r.kernel = kind == linear_kind::lightning ? "linear.lightning" : kind == linear_kind::gla ? "linear.gla" : "linear.based";
  r.shape = "b1 h8 t" + std::to_string(t) + " K" + std::to_string(K) + " V" + std::to_string(V) + " chunk64";
  r.dtype = "f32";
  r.threads = backend.exec.concurrency();
  r.bounded_by = bound::compute;
  r.median_ms = bench::median_ms(run, 5, 0.5, 20);
  // BASED's intra-chunk product runs over d, not the K = D' features (based_cpu.hpp).
  env.rate(r, double(heads) * t * (4.0 * K * V + 2.0 * chunk * (d + V)), 0);

  // fp64 recurrence over head 0's first `checked` tokens (outputs are causal).
  const auto head0 = [&](const tensor<float, 4>& x) { return x.cview().slice(1, 0, 1).slice(2, 0, checked); };
  std::vector<double> got;
  for (std::int64_t i = 0; i < checked; ++i)
    for (std::int64_t y = 0; y < V; ++y) got.push_back(o(0, 0, i, y));
  if (kind == linear_kind::based) {
    tensor<float, 4> fq({1, 1, checked, K}), fk({1, 1, checked, K});
    taylor_feature_map(head0(in.q), fq.view(), bp.map);
    taylor_feature_map(head0(in.k), fk.view(), bp.map);
    const auto want = test::linear_oracle(fq.cview(), fk.cview(), head0(in.v), {}, 1.0, true, bp.eps);
    r.rel_err = test::relative_l2(got.data(), want.o);
  } else {
    linear_decay d0 = decay;
    if (kind == linear_kind::gla) d0.per_channel = head0(in.g_channel);
    if (kind == linear_kind::lightning) d0.per_head = decay.per_head.slice(0, 0, 1);
    const double scale = kind == linear_kind::lightning ? 1.0 : 1.0 / std::sqrt(double(d));
    const auto want = test::linear_oracle(head0(in.q), head0(in.k), head0(in.v), d0, scale, false, 0.0);
    r.rel_err = test::relative_l2(got.data(), want.o);
  }
  r.tolerance = 1e-5;
  return r;
}

/// One GLA decode step (8 heads, K = V = 128) after a prefill of `context` tokens.
inline row run_linear_decode(const environment& env) {
  constexpr std::int64_t heads = 8, d = 128;
  const std::int64_t context = env.quick ? 1024 : 16384;
  std::mt19937_64 rng(test::fresh_seed());
  const test::linear_inputs in(1, heads, context + 1, d, d, rng, false, 16.0f);
  tensor<float, 4> o({1, heads, context + 1, d}), st({1, heads, d, d});
  std::fill(st.data(), st.data() + st.size(), 0.0f);
  cpu_native backend;
  std::vector<unsigned char> scratch(linear_attention_workspace_size(d, d, {}, backend));
  backend.scratch = {scratch.data(), scratch.size()};
  const auto rows = [](const tensor<float, 4>& x, std::int64_t a, std::int64_t b) { return x.cview().slice(2, a, b); };
  linear_decay prefill, step;
  prefill.per_channel = rows(in.g_channel, 0, context);
  step.per_channel = rows(in.g_channel, context, context + 1);
  linear_attention(rows(in.q, 0, context), rows(in.k, 0, context), rows(in.v, 0, context),
                   o.view().slice(2, 0, context), prefill, {st.view(), {}}, {}, backend);
  const std::vector<float> after_prefill(st.data(), st.data() + st.size());
  const auto decode = [&] {
    linear_attention(rows(in.q, context, context + 1), rows(in.k, context, context + 1),
                     rows(in.v, context, context + 1), o.view().slice(2, context, context + 1), step,
                     {st.view(), {}}, {}, backend);
  };
  row r;
  r.kernel = "linear.decode";
  r.shape = "gla b1 h8 context" + std::to_string(context) + " K128 V128";
  r.dtype = "f32 state f32";
  r.threads = backend.exec.concurrency();
  r.bounded_by = bound::memory;
  r.median_ms = bench::median_ms(decode, 20, 0.2, 2000);  // the state keeps moving; only the time counts here
  env.rate(r, 5.0 * heads * d * d, 8.0 * heads * d * d);

  std::copy(after_prefill.begin(), after_prefill.end(), st.data());  // one true step, checked
  decode();
  const auto head0 = [](const tensor<float, 4>& x) { return x.cview().slice(1, 0, 1); };
  linear_decay d0;
  d0.per_channel = head0(in.g_channel);
  const auto want = test::linear_oracle(head0(in.q), head0(in.k), head0(in.v), d0, 1.0 / std::sqrt(double(d)), false, 0.0);
  const std::vector<double> last(want.o.end() - d, want.o.end());
  r.rel_err = test::relative_l2(&o(0, 0, context, 0), last);
  r.tolerance = 1e-5;
  return r;
}

inline std::vector<tour_case> linear_cases() {
  std::vector<tour_case> cases;
  for (const auto kind : {linear_kind::lightning, linear_kind::gla, linear_kind::based})
    cases.push_back({"linear", [kind](const environment& env) { return run_linear_prefill(kind, env); }});
  cases.push_back({"linear", [](const environment& env) { return run_linear_decode(env); }});
  return cases;
}

}  // namespace attnkit::tour
