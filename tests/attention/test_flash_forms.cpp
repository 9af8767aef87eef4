// The input forms of attention_args on the reference backend and cpu<Arch>:
// key shards with positions merged back to the whole, ragged batches over a
// paged cache, a caller's bitmask, batch invariance, workspace bounds, and the
// errors of each form. Every result is checked against the fp64 oracle.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/merge.hpp"
#include "support/attention_case.hpp"
#include "support/compare.hpp"
#include "support/cpu_archs.hpp"
#include "support/every_backend.hpp"
#include "support/expect_error.hpp"
#include "support/paged_copy.hpp"
#include "support/ragged_batch.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

/// Keys [j0, j1) of a (b, h, s, d) view.
template <class T>
tensor_view<T, 4> key_slice(const tensor_view<T, 4>& t, std::int64_t j0, std::int64_t j1) {
  return tensor_view<T, 4>(t.data_handle() + j0 * t.stride(2), {t.extent(0), t.extent(1), j1 - j0, t.extent(3)},
                           t.strides());
}

/// The params of every mask case, plus ALiBi without causal (keys after the query visible).
std::vector<attention_params> params_sweep(const problem& pr, std::vector<float>& slopes, std::vector<float>& sinks,
                                           std::mt19937_64& rng) {
  std::vector<attention_params> all;
  for (mask_case m : all_mask_cases()) all.push_back(make_params(m, pr, slopes, sinks, rng));
  attention_params two_sided = make_params(mask_case::alibi, pr, slopes, sinks, rng);
  two_sided.causal = false;
  two_sided.window_left = 20;
  two_sided.window_right = 7;
  all.push_back(two_sided);
  return all;
}

TEST(FlashForms, KeyShardsWithPositionsMergeToTheWhole) {
  seeded_rng seeded;
  std::uniform_int_distribution<std::int64_t> rows(1, 40), keys(2, 300), cuts(1, 3);
  on_every_backend([&](auto backend) {
    for (int trial = 0; trial < 3; ++trial) {
      const std::int64_t skv = keys(seeded.rng), sq = std::min(skv, rows(seeded.rng));  // given positions are >= 0
      const problem pr{2, 4, 2, sq, skv, 16, 16};
      attention_case<float, float, float, float> c(pr, seeded.rng);
      std::vector<float> slopes, sinks;
      for (const attention_params& params : params_sweep(pr, slopes, sinks, seeded.rng)) {
        // Random cut points split the keys into shards; each shard knows where its keys sit.
        std::vector<std::int64_t> edges = {0, pr.skv};
        for (std::int64_t n = cuts(seeded.rng); n > 0; --n)
          edges.push_back(std::uniform_int_distribution<std::int64_t>(1, pr.skv - 1)(seeded.rng));
        std::sort(edges.begin(), edges.end());
        edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
        tensor<float, 4> merged({pr.b, pr.hq, pr.sq, pr.dv}), part({pr.b, pr.hq, pr.sq, pr.dv});
        tensor<float, 3> merged_lse({pr.b, pr.hq, pr.sq}, -INFINITY), part_lse({pr.b, pr.hq, pr.sq});
        std::vector<std::int64_t> q_pos(pr.b, pr.skv - pr.sq), k_pos(pr.b);
        for (std::size_t x = 0; x + 1 < edges.size(); ++x) {
          std::fill(k_pos.begin(), k_pos.end(), edges[x]);
          auto args = make_attention_args(c.q.cview(), key_slice(c.k.cview(), edges[x], edges[x + 1]),
                                          key_slice(c.v.cview(), edges[x], edges[x + 1]), part.view());
          args.params = params;
          if (x > 0) args.params.sink_logits = {};  // the sink joins one denominator: one shard's
          args.lse = part_lse.view();
          args.q_pos = tensor_view<const std::int64_t, 1>(q_pos.data(), {pr.b});
          args.k_pos = tensor_view<const std::int64_t, 1>(k_pos.data(), {pr.b});
          flash_attention(args, backend);
          merge_states(merged.cview(), merged_lse.cview(), part.cview(), part_lse.cview(), merged.view(),
                       merged_lse.view());
        }
        const reference_result ref = c.oracle(params);
        const error_stats e = compare_output(merged.view(), ref);
        EXPECT_TRUE(e.within(1e-5)) << "rel_l2 " << e.rel_l2 << " max_abs " << e.max_abs << " shards "
                                    << edges.size() - 1;
        for (std::int64_t b = 0; b < pr.b; ++b)
          for (std::int64_t h = 0; h < pr.hq; ++h)
            for (std::int64_t i = 0; i < pr.sq; ++i) {
              const double r = ref.row_lse(b, h, i);
              if (std::isinf(r))
                ASSERT_EQ(merged_lse(b, h, i), r);
              else
                ASSERT_NEAR(merged_lse(b, h, i), r, 1e-5 * std::max(1.0, std::abs(r)));
            }
      }
    }
  });
}

TEST(FlashForms, RaggedBatchOverPagesEqualsEachSequenceAlone) {
  seeded_rng seeded;
  std::uniform_int_distribution<std::int64_t> some(2, 150);
  // Empty sequences, a decode row, a 1000-key prefill, rows on both sides of the decode limit.
  const std::vector<std::int64_t> rows = {0, 1, 3, 1, some(seeded.rng), 9, 2, 130};
  const std::vector<std::int64_t> lengths = {5, 1000, 0, 37, some(seeded.rng) + 150, 9, 300, 1000};
  on_every_backend([&](auto backend) {
    ragged_batch rb(rows, lengths, problem{1, 4, 2, 1, 1, 16, 24}, seeded.rng);
    std::vector<float> slopes, sinks;
    for (const attention_params& params : params_sweep(rb.pr, slopes, sinks, seeded.rng)) {
      if (params.sinks > 0) continue;  // sinks must exist in every sequence; an empty one has none
      flash_attention(rb.args(params), backend);
      for (std::int64_t b = 0; b < rb.pr.b; ++b) {
        SCOPED_TRACE(::testing::Message() << "sequence " << b << " rows " << rows[b] << " keys " << lengths[b]);
        expect_rows_match(rb.o.cview(), rb.lse.cview(), rb.cu[b], rb.oracle(b, params), 1e-5);
      }
    }
  });
}

TEST(FlashForms, RaggedKeyWeightsEqualEachSequenceAlone) {
  seeded_rng seeded;
  std::uniform_int_distribution<std::int64_t> some(2, 120);
  std::uniform_real_distribution<float> weight(-0.5f, 2.0f);
  // Decode rows and prefill chunks in one call; out holds the longest sequence's keys for every sequence.
  const std::vector<std::int64_t> rows = {1, 0, 3, some(seeded.rng), 1, 40};
  const std::vector<std::int64_t> lengths = {700, 5, 37, some(seeded.rng) + 40, 1, 333};
  on_every_backend([&](auto backend) {
    ragged_batch rb(rows, lengths, problem{1, 4, 2, 1, 1, 16, 16}, seeded.rng);
    const std::int64_t keys = rb.pr.skv;
    std::vector<float> packed_weights(static_cast<std::size_t>(rb.pr.sq));
    for (float& w : packed_weights) w = weight(seeded.rng) < 0 ? 0.0f : weight(seeded.rng);
    attention_params params;
    params.causal = true;
    for (const std::int64_t heads : {rb.pr.hq, rb.pr.hkv}) {
      tensor<float, 3> out({rb.pr.b, heads, keys}, NAN);
      auto a = rb.args(params);
      a.kw.out = out.view();
      a.kw.row_weights = tensor_view<const float, 1>(packed_weights.data(), {rb.pr.sq});
      flash_attention(a, backend);
      const std::int64_t group = rb.pr.hq / heads;
      for (std::int64_t b = 0; b < rb.pr.b; ++b) {
        const reference_result ref = rb.oracle(b, params);
        for (std::int64_t w = 0; w < heads; ++w)
          for (std::int64_t j = 0; j < keys; ++j) {
            double want = 0;
            for (std::int64_t h = w * group; h < (w + 1) * group && j < lengths[b]; ++h)
              for (std::int64_t i = 0; i < rows[b]; ++i) want += packed_weights[rb.cu[b] + i] * ref.prob(0, h, i, j);
            ASSERT_NEAR(out(b, w, j), want, 1e-5 * std::max(1.0, want)) << "sequence " << b << " out row " << w
                                                                        << " key " << j;
          }
      }
    }
  });
}

TEST(FlashForms, ASequenceGetsTheSameBitsInAnyBatch) {
  seeded_rng seeded;
  std::uniform_int_distribution<std::int64_t> some(1, 200);
  for (cpu_arch a : compiled_cpu_archs())
    with_cpu_arch(a, [&](auto arch) {
      const cpu<decltype(arch)> backend{two_threads()};
      attention_params params;
      params.causal = true;
      // Sequence 0 (decode rows) and 1 (a prefill chunk) alone, then amid others, shuffled and padded.
      const std::vector<std::int64_t> rows = {2, 40, 1, 0, 7, 1};
      const std::vector<std::int64_t> lengths = {777, 333, some(seeded.rng), 12, 1200, some(seeded.rng)};
      ragged_batch full(rows, lengths, problem{1, 4, 2, 1, 1, 32, 32}, seeded.rng);
      flash_attention(full.args(params), backend);
      for (const std::vector<std::int64_t>& order : {std::vector<std::int64_t>{0}, {1}, {5, 1, 3, 0}, {4, 0, 2, 1}}) {
        std::vector<std::int64_t> r, l;
        for (std::int64_t b : order) r.push_back(rows[b]), l.push_back(lengths[b]);
        std::mt19937_64 other(seeded.seed);  // contents are copied below; only the shapes matter here
        ragged_batch sub(r, l, full.pr, other);
        // Same contents as in the full batch.
        for (std::size_t x = 0; x < order.size(); ++x) {
          const std::int64_t b = order[x];
          for (std::int64_t h = 0; h < full.pr.hq; ++h)
            for (std::int64_t i = 0; i < rows[b]; ++i)
              std::copy_n(&full.q.view(0, h, full.cu[b] + i, 0), full.pr.d, &sub.q.view(0, h, sub.cu[x] + i, 0));
          for (std::int64_t h = 0; h < full.pr.hkv; ++h)
            for (std::int64_t j = 0; j < lengths[b]; ++j) {
              std::copy_n(full.kp.view.row(b, h, j), full.pr.d, const_cast<float*>(sub.kp.view.row(x, h, j)));
              std::copy_n(full.vp.view.row(b, h, j), full.pr.dv, const_cast<float*>(sub.vp.view.row(x, h, j)));
            }
        }
        flash_attention(sub.args(params), backend);
        for (std::size_t x = 0; x < order.size(); ++x) {
          const std::int64_t b = order[x];
          for (std::int64_t h = 0; h < full.pr.hq; ++h)
            for (std::int64_t i = 0; i < rows[b]; ++i) {
              ASSERT_EQ(std::memcmp(&full.o.view(0, h, full.cu[b] + i, 0), &sub.o.view(0, h, sub.cu[x] + i, 0),
                                    sizeof(float) * full.pr.dv),
                        0)
                  << "sequence " << b << " head " << h << " row " << i << " at slot " << x;
              ASSERT_EQ(std::memcmp(&full.lse(0, h, full.cu[b] + i), &sub.lse(0, h, sub.cu[x] + i), sizeof(float)), 0);
            }
        }
      }
    });
}

TEST(FlashForms, CustomBitmaskEqualsTheMaskedOracle) {
  seeded_rng seeded;
  on_every_backend([&](auto backend) {
    for (const bool per_head : {false, true})
      for (const std::int64_t sq : {1, 5, 100}) {
        const problem pr{2, 4, 2, sq, 400, 16, 16};
        attention_case<float, float, float, float> c(pr, seeded.rng);
        const std::int64_t heads = per_head ? pr.hq : 1, bytes = (pr.skv + 7) / 8 + 3;  // rows padded on purpose
        std::vector<std::uint8_t> bits(static_cast<std::size_t>(heads * pr.b * sq * bytes));
        std::uniform_int_distribution<int> byte(0, 255);
        for (auto& x : bits) x = static_cast<std::uint8_t>(byte(seeded.rng));
        // Keys [128, 256) hidden from every row: whole tiles the kernels must skip.
        for (std::int64_t r = 0; r < heads * pr.b * sq; ++r) std::fill_n(&bits[r * bytes + 16], 16, 0);
        const auto bit = [&](std::int64_t b, std::int64_t h, std::int64_t i, std::int64_t j) {
          const std::int64_t row = ((per_head ? h : 0) * pr.b + b) * sq + i;
          return ((bits[row * bytes + j / 8] >> (j % 8)) & 1) != 0;
        };
        for (const bool causal : {false, true}) {
          attention_params params;
          params.causal = causal;
          auto args = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view);
          args.params = params;
          args.lse = c.lse.view();
          args.mask.bits = tensor_view<const std::uint8_t, 3>(bits.data(), {heads, pr.b * sq, bytes});
          flash_attention(args, backend);
          oracle_options opt;
          opt.allowed = bit;
          c.expect_matches(reference_attention(c.q.cview(), c.k.cview(), c.v.cview(), params, opt), 1e-5, false);
        }
      }
  });
}

TEST(FlashForms, TheUpperBoundCoversEveryCallWithinIt) {
  seeded_rng seeded;
  for (cpu_arch a : compiled_cpu_archs())
    with_cpu_arch(a, [&](auto arch) {
      const cpu<decltype(arch)> backend{two_threads()};
      const attention_limits limits{8, 8, 2, 200, 3000, 64, 64, true};
      const std::size_t bound = flash_attention_workspace_bound(limits, backend);
      std::uniform_int_distribution<std::int64_t> b(1, 8), rows(0, 200), keys(0, 3000);
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<std::int64_t> r(static_cast<std::size_t>(b(seeded.rng))), l(r.size());
        for (auto& x : r) x = rows(seeded.rng);
        for (auto& x : l) x = keys(seeded.rng);
        ragged_batch rb(r, l, problem{1, 8, 2, 1, 1, 64, 64}, seeded.rng);
        EXPECT_LE(flash_attention_workspace_size(rb.args({}), backend), bound);
      }
      // Uniform batches with key weights and no lse: the largest scratch per shape.
      tensor<float, 3> kw({8, 8, 3000});
      for (const std::int64_t sq : {1, 2, 200}) {
        const problem pr{8, 8, 2, sq, 3000, 64, 64};
        bhsd_tensor<float> q(pr.b, pr.hq, pr.sq, pr.d, layout::bhsd), k(pr.b, pr.hkv, pr.skv, pr.d, layout::bhsd);
        key_weights w;
        w.out = kw.view();
        EXPECT_LE(flash_attention_workspace_size(q.cview(), k.cview(), k.cview(), backend, {}, w), bound);
      }
    });
}

TEST(FlashForms, BadFormsFailBeforeAnyWrite) {
  seeded_rng seeded;
  on_every_backend([&](auto backend) {
    ragged_batch rb({3, 0, 5}, {10, 4, 20}, problem{1, 2, 1, 1, 1, 8, 8}, seeded.rng);
    const auto untouched = [&] {
      for (std::int64_t x = 0; x < static_cast<std::int64_t>(rb.o.storage.size()); ++x)
        if (!std::isnan(rb.o.storage.data()[x])) return false;
      return true;
    };
    const auto expect = [&](auto&& edit, const char* message) {
      auto a = rb.args({});
      std::vector<std::int64_t> cu = rb.cu;
      a.cu_seqlens_q = tensor_view<const std::int64_t, 1>(cu.data(), {static_cast<std::int64_t>(cu.size())});
      std::vector<std::int64_t> pos(3, 0);
      std::vector<std::uint8_t> bits(8 * 3, 0xff);
      edit(a, cu, pos, bits);
      expect_error([&] { flash_attention(a, backend); }, message);
      EXPECT_TRUE(untouched()) << message;
    };
    using A = attention_args<const float, const float, const float, float>;
    using V = std::vector<std::int64_t>;
    using Bits = std::vector<std::uint8_t>;
    expect([](A&, V& cu, V&, Bits&) { cu[2] = 2; }, "attnkit: flash_attention: cu_seqlens_q must not decrease, but cu_seqlens_q(2) = 2 < cu_seqlens_q(1) = 3");
    expect([](A&, V& cu, V&, Bits&) { cu[3] = 7; }, "attnkit: flash_attention: cu_seqlens_q(b) = 7 must equal q.extent(2) (the packed rows) = 8");
    expect([](A& a, V&, V& pos, Bits&) {
      pos[1] = -1;
      a.k_pos = tensor_view<const std::int64_t, 1>(pos.data(), {3});
    }, "attnkit: flash_attention: k_pos(1) must be in [0, 2^61), got -1");
    expect([](A& a, V&, V& pos, Bits&) {
      pos[2] = (std::int64_t{1} << 61) - 3;
      a.q_pos = tensor_view<const std::int64_t, 1>(pos.data(), {3});
    }, "attnkit: flash_attention: sequence 2's query rows reach position 2305843009213693949 + 5, outside (-2^61, 2^61)");
    expect([](A& a, V&, V&, Bits& bits) {
      a.mask.bits = tensor_view<const std::uint8_t, 3>(bits.data(), {1, 8, 2});
    }, "attnkit: flash_attention: mask.bits.extent(2) must hold ceil(skv / 8) = 3 bytes for the longest sequence's 20 keys, got 2");
    expect([](A& a, V&, V&, Bits& bits) {
      a.mask.bits = tensor_view<const std::uint8_t, 3>(bits.data(), {1, 6, 3});
    }, "attnkit: flash_attention: mask.bits.extent(1) (rows) must equal the query rows of the call = 8, got 6");
  });
}

}  // namespace
}  // namespace attnkit::test
