// bf16 prefill (Q, K and V bf16) on cpu<Arch> against the fp64 oracle. On
// avx512bf16 it runs on the pair dot product (P rounded to bf16 for P.V); on
// the other archs bf16 is widened to fp32. Sizes around the tile and pair
// edges, every mask, odd head dims, dv != d, GQA, both layouts, paged keys,
// non-finite values in masked keys, and the error of the path, reported.
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "support/attention_case.hpp"
#include "support/cpu_archs.hpp"
#include "support/paged_copy.hpp"

namespace attnkit::test {
namespace {

/// check_against_oracle for bf16 Q/K/V and output TO on this binary's arch, two threads.
template <class TO, class Arch>
void check_bf16(const problem& pr, mask_case m, Arch) {
  check_against_oracle<bfloat16, bfloat16, bfloat16, TO>(
      pr, m,
      [&](auto& c, const attention_params& params) {
        flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(),
                        cpu<Arch>{two_threads()});
      },
      false);
}

using bf16_param = std::tuple<cpu_arch, std::int64_t, std::int64_t, mask_case>;

class FlashBf16Sizes : public ::testing::TestWithParam<bf16_param> {};

// GQA 2 with 9 rows and more: every call takes the prefill path.
TEST_P(FlashBf16Sizes, MatchesFp64Reference) {
  const mask_case m = std::get<3>(GetParam());  // not a structured binding: lambdas capture it
  problem pr;
  pr.b = 2, pr.hq = 4, pr.hkv = 2, pr.sq = std::get<1>(GetParam()), pr.skv = std::get<2>(GetParam()), pr.d = pr.dv = 64;
  with_cpu_arch(std::get<0>(GetParam()), [&](auto a) {
    check_bf16<bfloat16>(pr, m, a);
    check_bf16<float>(pr, m, a);
  });
}

std::string bf16_name(const ::testing::TestParamInfo<bf16_param>& info) {
  const auto& [arch, sq, skv, m] = info.param;
  return std::string(cpu_arch_name(arch)) + "_sq" + std::to_string(sq) + "_skv" + std::to_string(skv) + "_" +
         mask_case_name(m);
}

INSTANTIATE_TEST_SUITE_P(Flash, FlashBf16Sizes,
                         ::testing::Combine(::testing::ValuesIn(compiled_cpu_archs()), ::testing::Values(9, 127, 300),
                                            ::testing::Values(1, 31, 129, 1000), ::testing::ValuesIn(all_mask_cases())),
                         bf16_name);

class FlashBf16 : public ::testing::TestWithParam<cpu_arch> {
 protected:
  /// f(Arch{}, c, rng) on this test's arch with a fresh bf16 case c (output f32) of pr.
  template <class F>
  void on_case(const problem& pr, F&& f) {
    with_cpu_arch(GetParam(), [&](auto a) {
      seeded_rng s;
      attention_case<bfloat16, bfloat16, bfloat16, float> c(pr, s.rng);
      f(a, c, s.rng);
    });
  }
};

TEST_P(FlashBf16, HeadDimsGqaAndLayouts) {
  with_cpu_arch(GetParam(), [&](auto a) {
    for (std::int64_t d : {1, 33, 80, 128, 256})
      for (std::int64_t group : {1, 8})
        for (layout lay : {layout::bhsd, layout::bshd}) {
          SCOPED_TRACE("d " + std::to_string(d) + " group " + std::to_string(group) + " " + layout_name(lay));
          problem pr;
          pr.hkv = 2, pr.hq = 2 * group, pr.sq = 40, pr.skv = 131, pr.d = pr.dv = d, pr.lay = lay;
          check_bf16<float>(pr, mask_case::everything, a);
        }
    problem pr;  // the value dim differs from the key dim, both odd
    pr.hq = 4, pr.hkv = 2, pr.sq = 100, pr.skv = 200, pr.d = 97, pr.dv = 41;
    check_bf16<float>(pr, mask_case::causal, a);
  });
}

// Paged keys and values, pages shuffled, unused slots NaN: the same result as contiguous.
TEST_P(FlashBf16, PagedKeysMatchContiguous) {
  problem pr;
  pr.hq = 4, pr.hkv = 2, pr.sq = 50, pr.skv = 300, pr.d = pr.dv = 64;
  on_case(pr, [&](auto a, auto& c, std::mt19937_64& rng) {
    using A = decltype(a);
    std::vector<float> slopes, sinks;
    const attention_params params = make_params(mask_case::causal, pr, slopes, sinks, rng);
    const paged_copy<bfloat16> pk(c.k.cview(), {pr.skv}, 16, rng), pv(c.v.cview(), {pr.skv}, 16, rng);
    tensor<float, 4> contiguous({1, pr.hq, pr.sq, pr.dv});
    flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), contiguous.view(), params, {}, cpu<A>{two_threads()});
    flash_attention(c.q.cview(), pk.view, pv.view, c.o.view, params, c.lse.view(), cpu<A>{two_threads()});
    for (std::int64_t h = 0; h < pr.hq; ++h)
      for (std::int64_t i = 0; i < pr.sq; ++i)
        for (std::int64_t y = 0; y < pr.dv; ++y) ASSERT_EQ(c.o.view(0, h, i, y), contiguous(0, h, i, y));
    c.expect_matches(c.oracle(params), 1e-2, false);
  });
}

// Values of keys every row's mask hides hold NaN and inf: key 95 (before every
// row's window) and keys 191 and 199 (holes of a caller's bitmask, each paired
// on pairs with a key rows see). The outputs are those of the clean values.
TEST_P(FlashBf16, NonFiniteValuesOfMaskedKeysNeverReachARow) {
  problem pr;
  pr.hq = 2, pr.hkv = 1, pr.sq = 64, pr.skv = 200, pr.d = pr.dv = 32;
  on_case(pr, [&](auto a, auto& c, std::mt19937_64&) {
    using A = decltype(a);
    const std::int64_t bytes = (pr.skv + 7) / 8;
    std::vector<std::uint8_t> bits(static_cast<std::size_t>(pr.sq * bytes), 0xff);
    for (std::int64_t i = 0; i < pr.sq; ++i)
      for (std::int64_t j : {191, 199}) bits[i * bytes + j / 8] &= static_cast<std::uint8_t>(~(1u << (j % 8)));
    tensor<float, 4> clean({1, pr.hq, pr.sq, pr.dv});
    const auto run = [&](tensor_view<float, 4> o) {
      auto args = make_attention_args(c.q.cview(), c.k.cview(), c.v.cview(), o);
      args.params.causal = true;
      args.params.window_left = 40;  // row 0 sits at position 136: its window starts at key 96
      args.mask.bits = tensor_view<const std::uint8_t, 3>(bits.data(), {1, pr.sq, bytes});
      flash_attention(args, cpu<A>{two_threads()});
    };
    run(clean.view());
    const float poison[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()};
    for (std::int64_t j : {95, 191, 199})
      for (std::int64_t y = 0; y < pr.dv; ++y) c.v.view(0, 0, j, y) = bfloat16(poison[(j + y) % 2]);
    run(c.o.view);
    // A tile with non-finite values takes its masked products in fp32 (P not
    // rounded): the same outputs up to bf16 rounding, never NaN or inf.
    for (std::int64_t h = 0; h < pr.hq; ++h)
      for (std::int64_t i = 0; i < pr.sq; ++i)
        for (std::int64_t y = 0; y < pr.dv; ++y) {
          const float x = c.o.view(0, h, i, y), ref = clean(0, h, i, y);
          ASSERT_TRUE(std::isfinite(x)) << "head " << h << " row " << i << " col " << y;
          ASSERT_NEAR(x, ref, 1e-2f * (1.0f + std::abs(ref))) << "head " << h << " row " << i << " col " << y;
        }
  });
}

// The error of bf16 prefill against the fp64 oracle, printed beside that of
// the fp32 body on the same bf16 inputs (this arch's fp32 path): rounding P to
// bf16 costs about 2^-9 relative per weight, within DESIGN's bf16 bound of 1e-2.
TEST_P(FlashBf16, ErrorAgainstTheOracleIsReported) {
  problem pr;
  pr.hq = 8, pr.hkv = 2, pr.sq = 256, pr.skv = 1024, pr.d = pr.dv = 128;
  on_case(pr, [&](auto a, auto& c, std::mt19937_64&) {
    using A = decltype(a);
    attention_params params;
    params.causal = true;
    const reference_result ref = c.oracle(params);
    flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, {}, cpu<A>{two_threads()});
    const error_stats e = compare_output(c.o.view, ref);
    // The fp32 body on the same inputs: K and V widened (exact) into f32 tensors.
    tensor<float, 4> q32({1, pr.hq, pr.sq, pr.d}), k32({1, pr.hkv, pr.skv, pr.d}), v32({1, pr.hkv, pr.skv, pr.dv});
    for (std::int64_t h = 0; h < pr.hq; ++h)
      for (std::int64_t i = 0; i < pr.sq; ++i)
        for (std::int64_t x = 0; x < pr.d; ++x) q32(0, h, i, x) = to_float(c.q.view(0, h, i, x));
    for (std::int64_t h = 0; h < pr.hkv; ++h)
      for (std::int64_t j = 0; j < pr.skv; ++j)
        for (std::int64_t x = 0; x < pr.d; ++x) {
          k32(0, h, j, x) = to_float(c.k.view(0, h, j, x));
          v32(0, h, j, x) = to_float(c.v.view(0, h, j, x));
        }
    tensor<float, 4> o32({1, pr.hq, pr.sq, pr.dv});
    flash_attention(q32.cview(), k32.cview(), v32.cview(), o32.view(), params, {}, cpu<A>{two_threads()});
    const error_stats e32 = compare_output(o32.cview(), ref);
    std::printf("bf16 prefill on %s: rel_l2 %.3g max_abs %.3g (fp32 body on the same inputs: rel_l2 %.3g)\n",
                A::name(), e.rel_l2, e.max_abs, e32.rel_l2);
    EXPECT_LE(e.rel_l2, 1e-2);
    EXPECT_LE(e32.rel_l2, 1e-5);
    if (has_bf16_dot<A>) {
      EXPECT_GT(e.rel_l2, e32.rel_l2);  // P is rounded: the pair path must not be the fp32 body in disguise
    } else {
      EXPECT_EQ(e.rel_l2, e32.rel_l2);  // widened bf16 is the fp32 body exactly
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Archs, FlashBf16, ::testing::ValuesIn(compiled_cpu_archs()),
                         [](const auto& info) { return std::string(cpu_arch_name(info.param)); });

}  // namespace
}  // namespace attnkit::test
