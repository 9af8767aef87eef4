// One tour row of an attention kernel: random inputs, the median time of the
// call, its rates, and the error of a sample of its output against the fp64
// oracle. The sample is the last (up to) 64 query rows of the first GQA group:
// bottom-right masks keep their alignment when leading query rows are dropped,
// and the oracle stays quick on large shapes.
#pragma once

#include <algorithm>
#include <cstdint>

#include "attnkit/attention/params.hpp"
#include "support/compare.hpp"
#include "support/reference_attention.hpp"
#include "support/timing.hpp"
#include "support/workloads.hpp"
#include "tour/tour.hpp"

namespace attnkit::tour {

/// make_call(inputs) returns the callable to time (it may own a workspace).
template <class TQ, class TK, class TV, class TO, class MakeCall>
row attention_row(const char* kernel, const bench::problem& p, const attention_params& params, int threads, bound b,
                  const environment& env, MakeCall&& make_call) {
  bench::attention_inputs<TQ, TK, TV, TO> in(p, test::fresh_seed());
  const auto call = make_call(in);
  row r;
  r.kernel = kernel;
  r.shape = bench::shape_string(p) + (params.causal ? " causal" : "");
  r.dtype = dtype_label<TQ, TK, TV, TO>();
  r.threads = threads;
  r.bounded_by = b;
  r.median_ms = bench::median_ms(call, env.quick ? 2 : 5, env.quick ? 0.0 : 0.5);
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

}  // namespace attnkit::tour
