// Tour rows for KV eviction on the decode path: a cache held at a 2048-row
// budget (hkv 8, hq 32, d 128, f16), one token per step, each policy evicting
// in batches of 64 (slack 63). A row's time is a whole step (attention with
// key weights when the policy scores keys, then observe, select and compact);
// eviction comes in batches, so each of 5 repetitions averages 128 steps and
// the row takes their median. The shape column gives the budget + slack and
// the policy's share of the step; rates count the rows every head holds. The
// error compares attention over the evicted cache (KV head 0's group, the
// last query) with the fp64 oracle over the rows that head kept.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "support/compare.hpp"
#include "support/decode_stream.hpp"
#include "support/reference_attention.hpp"
#include "tour/tour.hpp"

namespace attnkit::tour {

inline row run_kv_policy(bench::policy_kind kind, const environment& env) {
  using S = bench::decode_stream;
  constexpr std::int64_t budget = 2048, slack = 63;
  const int reps = 5, steps = env.quick ? 64 : 128;
  row r;
  bench::with_policy(kind, budget, slack, [&](auto& policy) {
    S s(budget, slack + 1 + (kind == bench::policy_kind::duo ? reps * steps + 64 : 0), test::fresh_seed());
    for (int warm = 0; warm < 64; ++warm) s.step(policy);
    std::vector<double> step_ms;
    double attention = 0, policy_share = 0;
    for (int rep = 0; rep < reps; ++rep) {
      s.attention_s = s.policy_s = 0;
      for (int t = 0; t < steps; ++t) s.step(policy);
      step_ms.push_back(1e3 * (s.attention_s + s.policy_s) / steps);
      attention += s.attention_s;
      policy_share += s.policy_s;
    }
    std::nth_element(step_ms.begin(), step_ms.begin() + reps / 2, step_ms.end());
    r.kernel = std::string("kv.") + bench::policy_name(kind);
    char shape[96];
    std::snprintf(shape, sizeof shape, "%lld+%lld hq%lld hkv%lld d%lld policy %.1f%%",
                  static_cast<long long>(budget), static_cast<long long>(slack), static_cast<long long>(S::hq),
                  static_cast<long long>(S::hkv), static_cast<long long>(S::d), 100 * policy_share / attention);
    r.shape = shape;
    r.dtype = "q f32 kv f16 o f32";
    r.threads = s.backend.exec.concurrency();
    r.bounded_by = bound::memory;
    r.median_ms = step_ms[reps / 2];
    double rows = 0;  // over all KV heads, which may hold different counts
    for (std::int64_t h = 0; h < S::hkv; ++h) rows += static_cast<double>(s.cache.index().length(h));
    env.rate(r, 4.0 * (S::hq / S::hkv) * rows * S::d, rows * S::d * 2.0 * sizeof(half));

    const std::int64_t len = s.cache.index().length(0), group = S::hq / S::hkv;
    tensor<float, 4> k({1, 1, len, S::d}), v({1, 1, len, S::d});
    for (std::int64_t j = 0; j < len; ++j)
      for (std::int64_t x = 0; x < S::d; ++x) {
        k(0, 0, j, x) = to_float(s.cache.key_row(0, j)[x]);
        v(0, 0, j, x) = to_float(s.cache.value_row(0, j)[x]);
      }
    const std::int64_t last = (s.next - 1) % S::tokens;
    const tensor_view<const float, 4> q(&s.q_pool(last, 0, 0, 0), {1, S::hq, 1, S::d});
    cached_attention(q, s.cache, s.o.view(), {}, {}, {}, s.backend);  // over the rows left after eviction
    r.rel_err = test::compare_output(s.o.cview().slice(1, 0, group),
                                     test::reference_attention(q.slice(1, 0, group), k.cview(), v.cview(), {}))
                    .rel_l2;
    r.tolerance = test::tolerance_for<float, half, half, float>();
  });
  return r;
}

inline std::vector<tour_case> kv_cases() {
  std::vector<tour_case> cases;
  for (auto kind : {bench::policy_kind::streaming, bench::policy_kind::h2o, bench::policy_kind::a2sf,
                    bench::policy_kind::tova, bench::policy_kind::duo})
    cases.push_back({std::string("kv.") + bench::policy_name(kind),
                     [kind](const environment& env) { return run_kv_policy(kind, env); }});
  return cases;
}

}  // namespace attnkit::tour
