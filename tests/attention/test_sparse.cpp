// Block-sparse attention (args.sparse) on the reference backend and this
// binary's cpu<Arch>: random layouts over awkward block sizes, prefill and
// decode, GQA with per-head and group-shared lists, every mask, paged and
// ragged K/V and key weights all equal the fp64 oracle restricted to what the
// layout selects (the spec's engine invariants E1-E4); a full layout gives the
// very bits of the call without one; bad layouts are clear errors before any write.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/merge.hpp"
#include "support/attention_case.hpp"
#include "support/compare.hpp"
#include "support/every_backend.hpp"
#include "support/expect_error.hpp"
#include "support/ragged_batch.hpp"
#include "support/seeded.hpp"
#include "support/sparse_layout.hpp"

namespace attnkit::test {
namespace {

/// The oracle of a uniform batch over what the layout selects (default positions).
reference_result sparse_oracle(const attention_case<float, float, float, float>& c, const attention_params& params,
                               const layout_lists& l) {
  oracle_options opt;
  opt.allowed = [&](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
    return l.sees(b, h, i, j, c.pr.skv - c.pr.sq + i, j);
  };
  return reference_attention(c.q.cview(), c.k.cview(), c.v.cview(), params, opt);
}

/// One block shape and density of a random layout, with or without sinks and a window.
struct layout_case {
  std::int64_t block_q, block_k;
  double density;
  std::int64_t sinks, window;
};

TEST(SparseAttention, RandomLayoutsEqualTheOracle) {
  seeded_rng seeded;
  // Prefill over several query and key tiles, decode with GQA 4 (keys split into
  // chunks), and head dims off the lanes.
  const problem shapes[] = {{2, 4, 2, 130, 300, 64, 64}, {2, 8, 2, 1, 1100, 128, 128}, {1, 3, 1, 9, 31, 7, 7},
                            {1, 4, 1, 3, 700, 80, 48}};
  const layout_case blocks[] = {{1, 1, 0.3, 0, 0}, {7, 5, 0.4, 3, 17}, {32, 64, 0.5, 0, 40}, {64, 128, 0.6, 4, 0},
                                {16, 16, 0.1, 0, 1}};
  on_every_backend([&](auto backend) {
    for (const problem& pr : shapes)
      for (mask_case m : {mask_case::none, mask_case::causal, mask_case::everything})
        for (const layout_case& lc : blocks)
          for (std::int64_t head_group : {std::int64_t{1}, pr.hq / pr.hkv}) {
            SCOPED_TRACE(::testing::Message() << "sq " << pr.sq << " skv " << pr.skv << " hq " << pr.hq << " mask "
                                              << mask_case_name(m) << " Bq " << lc.block_q << " Bk " << lc.block_k
                                              << " head_group " << head_group);
            attention_case<float, float, float, float> c(pr, seeded.rng);
            std::vector<float> slopes, sinks;
            const attention_params params = make_params(m, pr, slopes, sinks, seeded.rng);
            layout_lists l = random_layout(std::vector<std::int64_t>(pr.b, pr.sq), std::vector<std::int64_t>(pr.b, pr.skv),
                                           pr.hq / head_group, lc.block_q, lc.block_k, lc.density, seeded.rng);
            l.head_group = head_group;
            l.sinks = lc.sinks;
            l.window = lc.window;
            auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
            a.params = params;
            a.lse = c.lse.view();
            a.sparse = l.view();
            flash_attention(a, backend);
            c.expect_matches(sparse_oracle(c, params, l), 1e-5, false);
          }
  });
}

/// Lists of every block some row of the query block can see under causal masking.
layout_lists full_causal_layout(const problem& pr, std::int64_t block_q, std::int64_t block_k) {
  layout_lists l(pr.b, pr.hq, (pr.sq + block_q - 1) / block_q);
  l.block_q = block_q;
  l.block_k = block_k;
  for (std::int64_t b = 0; b < pr.b; ++b)
    for (std::int64_t h = 0; h < pr.hq; ++h)
      for (std::int64_t qb = 0; qb < l.qblocks; ++qb) {
        const std::int64_t last_row = std::min(pr.sq, (qb + 1) * block_q) - 1, last_key = pr.skv - pr.sq + last_row;
        for (std::int64_t kb = 0; kb * block_k <= last_key; ++kb) l.list(b, h, qb).push_back(kb);
      }
  return l;
}

TEST(SparseAttention, AFullLayoutGivesTheBitsOfTheCallWithoutOne) {
  seeded_rng seeded;
  on_every_backend([&](auto backend) {
    for (const problem& pr : {problem{2, 4, 2, 200, 333, 64, 64}, problem{1, 8, 2, 1, 2000, 128, 128}}) {
      attention_case<float, float, float, float> c(pr, seeded.rng);
      const attention_params params = causal_params();
      layout_lists l = full_causal_layout(pr, 32, 64);
      tensor<float, 4> plain({pr.b, pr.hq, pr.sq, pr.dv});
      flash_attention(make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), plain.view()), backend);
      auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
      a.params = params;
      a.lse = c.lse.view();
      a.sparse = l.view();
      flash_attention(a, backend);
      auto b = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), plain.view());
      b.params = params;
      flash_attention(b, backend);
      for (std::int64_t x = 0; x < plain.size(); ++x) ASSERT_EQ(c.o.storage.data()[x], plain.data()[x]) << x;
      c.expect_matches(c.oracle(params), 1e-5, false);
    }
  });
}

TEST(SparseAttention, TwoHalvesOfALayoutMergeToTheWhole) {
  seeded_rng seeded;
  const problem pr{2, 4, 2, 70, 260, 32, 32};
  on_every_backend([&](auto backend) {
    attention_case<float, float, float, float> c(pr, seeded.rng);
    const attention_params params = causal_params();
    layout_lists whole = random_layout({pr.sq, pr.sq}, {pr.skv, pr.skv}, pr.hq, 8, 16, 0.5, seeded.rng);
    // Each listed block goes to one half at random: the halves' keys are disjoint.
    layout_lists first = whole, second = whole;
    std::bernoulli_distribution coin(0.5);
    for (std::size_t x = 0; x < whole.lists.size(); ++x) {
      first.lists[x].clear();
      second.lists[x].clear();
      for (std::int64_t id : whole.lists[x]) (coin(seeded.rng) ? first : second).lists[x].push_back(id);
    }
    tensor<float, 4> o1({pr.b, pr.hq, pr.sq, pr.dv}), o2({pr.b, pr.hq, pr.sq, pr.dv});
    tensor<float, 3> lse1({pr.b, pr.hq, pr.sq}), lse2({pr.b, pr.hq, pr.sq});
    const auto run = [&](layout_lists& l, tensor<float, 4>& o, tensor<float, 3>& lse) {
      auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), o.view());
      a.params = params;
      a.lse = lse.view();
      a.sparse = l.view();
      flash_attention(a, backend);
    };
    run(first, o1, lse1);
    run(second, o2, lse2);
    merge_states(o1.cview(), lse1.cview(), o2.cview(), lse2.cview(), c.o.view, c.lse.view());
    c.expect_matches(sparse_oracle(c, params, whole), 1e-5, false);
  });
}

TEST(SparseAttention, RowsThatSelectNothingGiveZeroAndMinusInfinity) {
  seeded_rng seeded;
  const problem pr{1, 2, 1, 40, 100, 16, 16};
  on_every_backend([&](auto backend) {
    attention_case<float, float, float, float> c(pr, seeded.rng);
    layout_lists l = random_layout({pr.sq}, {pr.skv}, pr.hq, 8, 10, 0.5, seeded.rng);
    l.list(0, 0, 1).clear();  // rows 8..15 of head 0 select nothing
    for (std::int64_t qb = 0; qb < l.qblocks; ++qb) l.list(0, 1, qb).clear();  // head 1: nothing at all
    auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
    a.lse = c.lse.view();
    a.sparse = l.view();
    flash_attention(a, backend);
    for (std::int64_t i = 0; i < pr.sq; ++i) {
      const bool empty = i / 8 == 1 || l.list(0, 0, i / 8).empty();
      if (empty) {
        EXPECT_EQ(c.lse(0, 0, i), -std::numeric_limits<float>::infinity()) << i;
      }
      EXPECT_EQ(c.lse(0, 1, i), -std::numeric_limits<float>::infinity()) << i;
      for (std::int64_t x = 0; x < pr.dv; ++x) {
        if (empty) {
          EXPECT_EQ(c.o.view(0, 0, i, x), 0.0f);
        }
        EXPECT_EQ(c.o.view(0, 1, i, x), 0.0f);
      }
    }
    c.expect_matches(sparse_oracle(c, {}, l), 1e-5, false);
  });
}

TEST(SparseAttention, KeysOutsideTheLayoutNeverReachTheOutput) {
  // Keys and values the layout leaves out hold NaN: if any of them were used, the output would show it.
  seeded_rng seeded;
  const problem pr{1, 4, 1, 50, 600, 64, 64};
  on_every_backend([&](auto backend) {
    attention_case<float, float, float, float> c(pr, seeded.rng);
    layout_lists l(1, 1, 1);
    l.block_q = pr.sq;
    l.block_k = 50;
    l.head_group = pr.hq;
    l.list(0, 0, 0) = {1, 4, 5, 11};
    for (std::int64_t j = 0; j < pr.skv; ++j)
      if (!l.sees(0, 0, 0, j, pr.skv, j))
        for (std::int64_t x = 0; x < pr.d; ++x) c.k.view(0, 0, j, x) = c.v.view(0, 0, j, x) = std::nanf("");
    auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
    a.lse = c.lse.view();
    a.sparse = l.view();
    flash_attention(a, backend);
    c.expect_matches(sparse_oracle(c, {}, l), 1e-5, false);
  });
}

TEST(SparseAttention, RaggedBatchOverPagesEqualsEachSequenceAlone) {
  seeded_rng seeded;
  const std::vector<std::int64_t> rows = {0, 1, 3, 130, 9, 2}, lengths = {5, 1000, 0, 400, 9, 300};
  on_every_backend([&](auto backend) {
    ragged_batch rb(rows, lengths, problem{1, 4, 2, 1, 1, 16, 24}, seeded.rng);
    layout_lists l = random_layout(rows, lengths, rb.pr.hq / 2, 4, 24, 0.4, seeded.rng);
    l.head_group = 2;
    l.window = 5;
    const attention_params params = causal_params();
    auto a = rb.args(params);
    a.sparse = l.view();
    flash_attention(a, backend);
    for (std::int64_t b = 0; b < rb.pr.b; ++b) {
      SCOPED_TRACE(::testing::Message() << "sequence " << b << " rows " << rows[b] << " keys " << lengths[b]);
      oracle_options opt;
      opt.allowed = [&](std::int64_t, std::int64_t h, std::int64_t i, std::int64_t j) {
        return l.sees(b, h, i, j, lengths[b] - rows[b] + i, j);
      };
      const auto qs = tensor_view<const float, 4>(rb.q.view.data_handle() + rb.cu[b] * rb.q.view.stride(2),
                                                  {1, rb.pr.hq, rows[b], rb.pr.d}, rb.q.view.strides());
      const auto one = [&](const bhsd_tensor<float>& t) {
        return tensor_view<const float, 4>(t.view.data_handle() + b * t.view.stride(0),
                                           {1, rb.pr.hkv, lengths[b], t.view.extent(3)}, t.view.strides());
      };
      expect_rows_match(rb.o.cview(), rb.lse.cview(), rb.cu[b],
                        reference_attention(qs, one(rb.k), one(rb.v), params, opt), 1e-5);
    }
  });
}

TEST(SparseAttention, KeyWeightsCountOnlySelectedKeys) {
  seeded_rng seeded;
  on_every_backend([&](auto backend) {
    for (const problem& pr : {problem{1, 4, 2, 100, 300, 32, 32}, problem{2, 8, 2, 1, 900, 64, 64}}) {
      attention_case<float, float, float, float> c(pr, seeded.rng);
      const attention_params params = causal_params();
      layout_lists l = random_layout(std::vector<std::int64_t>(pr.b, pr.sq), std::vector<std::int64_t>(pr.b, pr.skv),
                                     pr.hq, 16, 32, 0.4, seeded.rng);
      l.sinks = 3;
      tensor<float, 3> out({pr.b, pr.hkv, pr.skv}, std::nanf(""));
      auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
      a.params = params;
      a.lse = c.lse.view();
      a.sparse = l.view();
      a.kw.out = out.view();
      flash_attention(a, backend);
      const reference_result ref = sparse_oracle(c, params, l);
      c.expect_matches(ref, 1e-5, false);
      double worst = 0;
      for (std::int64_t b = 0; b < pr.b; ++b)
        for (std::int64_t hk = 0; hk < pr.hkv; ++hk)
          for (std::int64_t j = 0; j < pr.skv; ++j) {
            double want = 0;
            for (std::int64_t h = hk * pr.hq / pr.hkv; h < (hk + 1) * pr.hq / pr.hkv; ++h)
              for (std::int64_t i = 0; i < pr.sq; ++i) want += ref.prob(b, h, i, j);
            keep_worst(worst, std::abs(out(b, hk, j) - want));
          }
      EXPECT_LE(worst, 1e-5 * pr.sq);
    }
  });
}

TEST(SparseAttention, BadLayoutsFailBeforeAnyWrite) {
  seeded_rng seeded;
  const problem pr{1, 4, 2, 10, 50, 8, 8};
  attention_case<float, float, float, float> c(pr, seeded.rng);
  const auto fails = [&](const block_sparse_layout& layout, const std::string& message) {
    auto a = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
    a.sparse = layout;
    expect_error([&] { flash_attention(a, reference{}); }, message);
    for (std::int64_t x = 0; x < c.o.storage.size(); ++x) ASSERT_TRUE(std::isnan(c.o.storage.data()[x]));
  };
  layout_lists good(1, 4, 3);
  good.block_q = 4;
  good.block_k = 8;
  const std::string fn = "attnkit: flash_attention: ";
  {
    layout_lists l = good;
    l.list(0, 1, 2) = {2, 7};
    fails(l.view(), fn + "sparse.indices(1) = 7 (sequence 0, head group 1, query block 2) must be a key block in [0, 7)");
  }
  {
    layout_lists l = good;
    l.list(0, 0, 1) = {3, 1};
    fails(l.view(), fn + "sparse.indices(0 .. 1) = 3, 1 (sequence 0, head group 0, query block 1) must be ascending and unique");
  }
  {
    layout_lists l = good;
    l.list(0, 3, 0) = {4, 4};
    fails(l.view(), fn + "sparse.indices(0 .. 1) = 4, 4 (sequence 0, head group 3, query block 0) must be ascending and unique");
  }
  {
    layout_lists l = good;
    l.list(0, 0, 0) = {1};
    const block_sparse_layout v = l.view();
    l.indptr[0] = 2;  // query block 0 of head group 0 runs backwards, from past nnz
    fails(v, fn + "sparse.indptr(0, 0, 0 .. 1) = 2 .. 1 must be a non-decreasing range inside [0, nnz = 1]");
  }
  {
    layout_lists l = good;
    l.head_group = 3;
    fails(l.view(), fn + "sparse.head_group must divide the GQA group hq / hkv = 2, got 3");
  }
  {
    layout_lists l(1, 4, 2);  // 10 rows in blocks of 4 need 3 query blocks
    l.block_q = 4;
    l.block_k = 8;
    fails(l.view(), fn + "sparse.indptr.extent(2) must hold n_qblk + 1 = 4 offsets (the tallest sequence's 10 rows in "
                  "blocks of 4), got 3");
  }
  {
    layout_lists l = good;
    l.block_k = 0;
    fails(l.view(), fn + "sparse.block_k must be in [1, 2^61), got 0");
  }
}

}  // namespace
}  // namespace attnkit::test
