// Tour row for serving many sequences through one kv_pool: one decode row for
// each of 64 sequences of ragged lengths (100..3941 rows; 16 sequences of
// 62..542 with --quick), f16, hkv 8, hq 32, d 128, pages of 16 rows, in one
// pool_attention call. The shape column ends with xR: the time of the same
// step as one call per sequence, over this row's time. The error compares sequence 0's first GQA
// group with the fp64 oracle over the rows that sequence holds.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "support/compare.hpp"
#include "support/pool_batch.hpp"
#include "support/reference_attention.hpp"
#include "support/timing.hpp"
#include "tour/tour.hpp"

namespace attnkit::tour {

inline row run_pool_batch(const environment& env) {
  using bench::pool_batch;
  const std::int64_t n = env.quick ? 16 : 64;
  const auto length = [&](std::int64_t s) { return env.quick ? 50 + bench::ragged_length(s) / 8 : bench::ragged_length(s); };
  pool_batch in(n, length, 1, test::fresh_seed());
  in.gather_all();
  const cpu_native backend;
  const int reps = env.quick ? 2 : 5;
  const double min_s = env.quick ? 0.0 : 0.5;
  row r;
  r.kernel = "kv.pool_batch";
  r.threads = backend.exec.concurrency();
  r.bounded_by = bound::memory;
  r.median_ms = bench::median_ms([&] { in.decode_batch(backend); }, reps, min_s);
  const double each_ms = bench::median_ms([&] { in.decode_each(backend); }, reps, min_s);
  std::int64_t shortest = length(0), longest = length(0);
  for (std::int64_t s = 1; s < n; ++s) shortest = std::min(shortest, length(s)), longest = std::max(longest, length(s));
  char shape[96];
  std::snprintf(shape, sizeof shape, "b%lld skv%lld..%lld hq%lld hkv%lld d%lld x%.2f", static_cast<long long>(n),
                static_cast<long long>(shortest), static_cast<long long>(longest),
                static_cast<long long>(pool_batch::hq), static_cast<long long>(pool_batch::hkv),
                static_cast<long long>(pool_batch::d), each_ms / r.median_ms);
  r.shape = shape;
  r.dtype = "q f32 kv f16 o f32";
  env.rate(r, in.flops(), in.kv_bytes());

  in.decode_batch(backend);
  const std::int64_t len = in.pool.index(in.ids[0], 0).length(0), group = pool_batch::hq / pool_batch::hkv;
  tensor<float, 4> k({1, 1, len, pool_batch::d}), v({1, 1, len, pool_batch::d});
  for (std::int64_t j = 0; j < len; ++j)
    for (std::int64_t x = 0; x < pool_batch::d; ++x) {
      k(0, 0, j, x) = to_float(in.pool.key_row(in.ids[0], 0, 0, j)[x]);
      v(0, 0, j, x) = to_float(in.pool.value_row(in.ids[0], 0, 0, j)[x]);
    }
  const auto q0 = in.q.cview().slice(1, 0, group).slice(2, 0, 1);
  r.rel_err = test::compare_output(in.o.cview().slice(1, 0, group).slice(2, 0, 1),
                                   test::reference_attention(q0, k.cview(), v.cview(), {}))
                  .rel_l2;
  r.tolerance = test::tolerance_for<float, half, half, float>();
  return r;
}

inline std::vector<tour_case> pool_cases() { return {{"kv.pool_batch", run_pool_batch}}; }

}  // namespace attnkit::tour
