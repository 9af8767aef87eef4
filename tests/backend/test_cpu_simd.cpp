// The CPU backend's SIMD verbs on every compiled arch: exp against libm in
// double over the whole range it promises, the transposed horizontal sum, and
// widening loads of every half and bfloat16 bit pattern.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/exp.hpp"
#include "attnkit/backend/cpu/tanh.hpp"
#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "support/cpu_archs.hpp"
#include "support/random.hpp"

namespace attnkit::test {
namespace {

class CpuSimd : public ::testing::TestWithParam<cpu_arch> {};

float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

TEST_P(CpuSimd, ExpWithinOneUlpOverItsRange) {
  with_cpu_arch(GetParam(), [](auto arch) {
    using A = decltype(arch);
    using B = simd::fbatch<A>;
    constexpr int L = simd::lanes<A>;
    alignas(64) float x[L], y[L];
    double worst = 0.0;
    float worst_x = 0.0f;
    int n = 0;
    const auto flush = [&] {
      simd::exp<A>(B::load_aligned(x)).store_aligned(y);
      for (int i = 0; i < n; ++i) {
        const double e = std::exp(static_cast<double>(x[i]));
        const double rel = std::abs(y[i] - e) / e;
        if (rel > worst) worst = rel, worst_x = x[i];
      }
      n = 0;
    };
    // Every 61st float of both signs up to |x| = 88.4, then the range ends exactly.
    for (std::uint32_t sign : {0u, 0x80000000u})
      for (std::uint32_t u = 0; u < 0x42b10000u; u += 61) {
        const float v = from_bits(u | sign);
        if (v < simd::exp_min_arg || v > simd::exp_max_arg) continue;
        x[n++] = v;
        if (n == L) flush();
      }
    for (float v : {simd::exp_min_arg, simd::exp_max_arg, 0.0f, -0.0f, 1e-30f, -1e-30f}) {
      x[n++] = v;
      if (n == L) flush();
    }
    if (n > 0) flush();
    EXPECT_LE(worst, 1.2e-7) << "worst at x = " << worst_x;

    // Outside the range: 0 below (true values under FLT_MIN), +inf above, NaN stays NaN.
    const float inf = std::numeric_limits<float>::infinity();
    const float specials[] = {-inf, -1000.0f, std::nextafter(simd::exp_min_arg, -inf), inf, 1000.0f,
                              std::nextafter(simd::exp_max_arg, inf), std::numeric_limits<float>::quiet_NaN()};
    const float expected[] = {0.0f, 0.0f, 0.0f, inf, inf, inf};
    for (int i = 0; i < 7; ++i) {
      for (int l = 0; l < L; ++l) x[l] = specials[i];
      simd::exp<A>(B::load_aligned(x)).store_aligned(y);
      if (i < 6)
        EXPECT_EQ(y[0], expected[i]) << "exp(" << specials[i] << ")";
      else
        EXPECT_TRUE(std::isnan(y[0]));
    }
  });
}

TEST_P(CpuSimd, TanhWithinItsBoundOverAllFloats) {
  with_cpu_arch(GetParam(), [](auto arch) {
    using A = decltype(arch);
    using B = simd::fbatch<A>;
    constexpr int L = simd::lanes<A>;
    alignas(64) float x[L], y[L];
    double worst = 0.0;
    float worst_x = 0.0f;
    // Every 613th finite float of both signs, infinities, and the switch point 0.25.
    std::vector<float> inputs = {0.25f, -0.25f, std::nextafter(0.25f, 0.0f), std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity(), 0.0f, -0.0f};
    for (std::uint32_t sign : {0u, 0x80000000u})
      for (std::uint32_t u = 0; u < 0x7f800000u; u += 613) inputs.push_back(from_bits(u | sign));
    while (inputs.size() % L != 0) inputs.push_back(1.0f);
    for (std::size_t i = 0; i < inputs.size(); i += L) {
      for (int l = 0; l < L; ++l) x[l] = inputs[i + l];
      simd::tanh<A>(B::load_aligned(x)).store_aligned(y);
      for (int l = 0; l < L; ++l) {
        const double e = std::tanh(static_cast<double>(x[l]));
        const double rel = e == 0.0 ? std::abs(y[l]) : std::abs(y[l] - e) / std::abs(e);
        if (rel > worst) worst = rel, worst_x = x[l];
      }
    }
    EXPECT_LE(worst, 4e-7) << "worst at x = " << worst_x;
  });
}

TEST_P(CpuSimd, TransposeSumPutsRowSumsInOrder) {
  with_cpu_arch(GetParam(), [](auto arch) {
    using A = decltype(arch);
    using B = simd::fbatch<A>;
    constexpr int L = simd::lanes<A>;
    const std::uint64_t seed = fresh_seed();
    SCOPED_TRACE(seed_note(seed));
    std::mt19937_64 rng(seed);
    alignas(64) float m[L][L], out[L];
    fill_normal(&m[0][0], L * L, rng);
    B rows[L];
    for (int r = 0; r < L; ++r) rows[r] = B::load_aligned(m[r]);
    simd::transpose_sum<A>(rows).store_aligned(out);
    for (int r = 0; r < L; ++r) {
      double sum = 0.0;
      for (int c = 0; c < L; ++c) sum += m[r][c];
      EXPECT_NEAR(out[r], sum, 1e-5 * (1.0 + std::abs(sum))) << "row " << r;
    }
  });
}

template <class T, class A>
void expect_widening_exact() {
  constexpr int L = simd::lanes<A>;
  alignas(64) float out[L];
  for (std::uint32_t base = 0; base < 65536; base += L) {
    T in[L];
    for (int i = 0; i < L; ++i) in[i] = T::from_bits(static_cast<std::uint16_t>(base + i));
    simd::load_widen<A>(in).store_aligned(out);
    for (int i = 0; i < L; ++i) {
      const float expect = to_float(in[i]);
      if (std::isnan(expect))
        ASSERT_TRUE(std::isnan(out[i])) << "bits " << base + i;
      else
        ASSERT_EQ(std::memcmp(&out[i], &expect, sizeof expect), 0) << "bits " << base + i;
    }
  }
}

TEST_P(CpuSimd, WideningIsExactForEveryBitPattern) {
  with_cpu_arch(GetParam(), [](auto arch) {
    using A = decltype(arch);
    expect_widening_exact<half, A>();
    expect_widening_exact<bfloat16, A>();
  });
}

INSTANTIATE_TEST_SUITE_P(Archs, CpuSimd, ::testing::ValuesIn(compiled_cpu_archs()),
                         [](const auto& info) { return std::string(cpu_arch_name(info.param)); });

}  // namespace
}  // namespace attnkit::test
