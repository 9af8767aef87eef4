// A ragged batch for the input-form tests: packed query rows, keys in a
// shuffled page pool, and per sequence its own contiguous K and V for the
// oracle; and the check of one sequence's packed rows against its oracle.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/attention_args.hpp"
#include "support/paged_copy.hpp"
#include "support/problem.hpp"
#include "support/random.hpp"
#include "support/reference_attention.hpp"

namespace attnkit::test {

/// Checks o (and lse) of the rows [r0, r0 + rows) of head-major views against an oracle.
inline void expect_rows_match(const tensor_view<const float, 4>& o, const tensor_view<const float, 3>& lse, std::int64_t r0,
                       const reference_result& ref, double tol) {
  double worst = 0, ref_max = 0;
  for (std::int64_t h = 0; h < ref.hq; ++h)
    for (std::int64_t i = 0; i < ref.sq; ++i) {
      const double r = ref.row_lse(0, h, i), x = lse(0, h, r0 + i);
      if (std::isinf(r))
        EXPECT_EQ(x, r) << "lse of head " << h << " row " << i;
      else
        EXPECT_NEAR(x, r, tol * std::max(1.0, std::abs(r))) << "lse of head " << h << " row " << i;
      for (std::int64_t c = 0; c < ref.dv; ++c) {
        worst = std::max(worst, std::abs(o(0, h, r0 + i, c) - ref.out(0, h, i, c)));
        ref_max = std::max(ref_max, std::abs(ref.out(0, h, i, c)));
      }
    }
  EXPECT_LE(worst, tol * std::max(1.0, ref_max));
}

/// A ragged batch: packed query rows, keys in a shuffled page pool, and per sequence
/// its own contiguous K and V for the oracle.
struct ragged_batch {
  std::vector<std::int64_t> rows, lengths, cu;
  problem pr;  // b, hq, hkv, d, dv; sq = total rows, skv = longest
  bhsd_tensor<float> q, o, k, v;
  tensor<float, 3> lse;
  paged_copy<float> kp, vp;

  ragged_batch(const std::vector<std::int64_t>& rows_, const std::vector<std::int64_t>& lengths_, problem p,
               std::mt19937_64& rng)
      : rows(rows_),
        lengths(lengths_),
        cu(prefix(rows_)),
        pr(shape(p, rows_, lengths_)),
        q(1, pr.hq, pr.sq, pr.d, layout::bhsd),
        o(1, pr.hq, pr.sq, pr.dv, layout::bhsd),
        k(pr.b, pr.hkv, pr.skv, pr.d, layout::bhsd),
        v(pr.b, pr.hkv, pr.skv, pr.dv, layout::bhsd),
        lse({1, pr.hq, pr.sq}, NAN),
        kp(fill(k, rng), lengths, 16, rng),
        vp(fill(v, rng), lengths, 16, rng) {
    fill(q, rng);
    std::fill_n(o.storage.data(), o.storage.size(), NAN);
  }

  static std::vector<std::int64_t> prefix(const std::vector<std::int64_t>& r) {
    std::vector<std::int64_t> c = {0};
    for (std::int64_t x : r) c.push_back(c.back() + x);
    return c;
  }
  static problem shape(problem p, const std::vector<std::int64_t>& r, const std::vector<std::int64_t>& l) {
    p.b = static_cast<std::int64_t>(r.size());
    p.sq = prefix(r).back();
    p.skv = std::max<std::int64_t>(1, *std::max_element(l.begin(), l.end()));
    return p;
  }
  static tensor_view<const float, 4> fill(bhsd_tensor<float>& t, std::mt19937_64& rng) {
    fill_normal(t.storage.data(), t.storage.size(), rng);
    return t.cview();
  }

  attention_args<const float, const float, const float, float> args(const attention_params& params) {
    auto a = make_attention_args(q.cview(), kp.view, vp.view, o.view);
    a.params = params;
    a.lse = lse.view();
    a.cu_seqlens_q = tensor_view<const std::int64_t, 1>(cu.data(), {pr.b + 1});
    return a;
  }

  /// The oracle of sequence b alone.
  reference_result oracle(std::int64_t b, const attention_params& params) const {
    const auto qs = tensor_view<const float, 4>(q.view.data_handle() + cu[b] * q.view.stride(2),
                                                {1, pr.hq, rows[b], pr.d}, q.view.strides());
    const auto one = [&](const bhsd_tensor<float>& t) {
      return tensor_view<const float, 4>(t.view.data_handle() + b * t.view.stride(0),
                                         {1, pr.hkv, lengths[b], t.view.extent(3)}, t.view.strides());
    };
    return reference_attention(qs, one(k), one(v), params);
  }
};

}  // namespace attnkit::test
