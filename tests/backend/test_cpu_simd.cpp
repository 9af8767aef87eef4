// The CPU backend's SIMD verbs on every compiled arch: exp against libm in
// double over the whole range it promises, the transposed horizontal sum, and
// widening loads of every half and bfloat16 bit pattern, and tile transposes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/exp.hpp"
#include "attnkit/backend/cpu/tanh.hpp"
#include "attnkit/backend/cpu/transpose.hpp"
#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "support/cpu_archs.hpp"
#include "support/random.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

class CpuSimd : public ::testing::TestWithParam<cpu_arch> {};

float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

/// Largest relative error (and where) of simd_f against exact(double) over the
/// floats for_each_input(emit) emits, run through Arch's registers.
template <class A, class SimdF, class Exact, class Inputs>
std::pair<double, float> worst_relative_error(SimdF simd_f, Exact exact, Inputs for_each_input) {
  constexpr int L = simd::lanes<A>;
  alignas(64) float x[L], y[L];
  std::pair<double, float> worst{0.0, 0.0f};
  int n = 0;
  const auto flush = [&] {
    simd_f(simd::fbatch<A>::load_aligned(x)).store_aligned(y);
    for (int i = 0; i < n; ++i) {
      const double e = exact(static_cast<double>(x[i]));
      const double rel = e == 0.0 ? std::abs(y[i]) : std::abs(y[i] - e) / std::abs(e);
      if (rel > worst.first) worst = {rel, x[i]};
    }
    n = 0;
  };
  for_each_input([&](float v) {
    x[n++] = v;
    if (n == L) flush();
  });
  if (n > 0) flush();
  return worst;
}

/// emit(every step-th float of both signs whose bit pattern is below `end`).
template <class Emit>
void float_sweep(std::uint32_t end, std::uint32_t step, Emit&& emit) {
  for (std::uint32_t sign : {0u, 0x80000000u})
    for (std::uint32_t u = 0; u < end; u += step) emit(from_bits(u | sign));
}

TEST_P(CpuSimd, ExpWithinOneUlpOverItsRange) {
  with_cpu_arch(GetParam(), [](auto arch) {
    using A = decltype(arch);
    using B = simd::fbatch<A>;
    constexpr int L = simd::lanes<A>;
    // Every 61st float of both signs up to |x| = 88.4 inside the range, and the range's ends.
    const auto [worst, at] = worst_relative_error<A>(
        [](B v) { return simd::exp<A>(v); }, [](double v) { return std::exp(v); },
        [](auto emit) {
          float_sweep(0x42b10000u, 61, [&](float v) {
            if (v >= simd::exp_min_arg && v <= simd::exp_max_arg) emit(v);
          });
          for (float v : {simd::exp_min_arg, simd::exp_max_arg, 0.0f, -0.0f, 1e-30f, -1e-30f}) emit(v);
        });
    EXPECT_LE(worst, 1.2e-7) << "worst at x = " << at;

    // Outside the range: 0 below (true values under FLT_MIN), +inf above, NaN stays NaN.
    const float inf = std::numeric_limits<float>::infinity();
    const float specials[] = {-inf, -1000.0f, std::nextafter(simd::exp_min_arg, -inf), inf, 1000.0f,
                              std::nextafter(simd::exp_max_arg, inf), std::numeric_limits<float>::quiet_NaN()};
    const float expected[] = {0.0f, 0.0f, 0.0f, inf, inf, inf};
    alignas(64) float y[L];
    for (int i = 0; i < 7; ++i) {
      simd::exp<A>(B(specials[i])).store_aligned(y);
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
    // Every 613th finite float of both signs, infinities, and around the switch point 0.25.
    const auto [worst, at] = worst_relative_error<A>(
        [](simd::fbatch<A> v) { return simd::tanh<A>(v); }, [](double v) { return std::tanh(v); },
        [](auto emit) {
          float_sweep(0x7f800000u, 613, emit);
          const float inf = std::numeric_limits<float>::infinity();
          for (float v : {0.25f, -0.25f, std::nextafter(0.25f, 0.0f), inf, -inf, 0.0f, -0.0f}) emit(v);
        });
    EXPECT_LE(worst, 4e-7) << "worst at x = " << at;
  });
}

TEST_P(CpuSimd, TransposeSumPutsRowSumsInOrder) {
  with_cpu_arch(GetParam(), [](auto arch) {
    using A = decltype(arch);
    using B = simd::fbatch<A>;
    constexpr int L = simd::lanes<A>;
    seeded_rng seeded;
    alignas(64) float m[L][L], out[L];
    fill_normal(&m[0][0], L * L, seeded.rng);
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

TEST_P(CpuSimd, TransposeMovesEveryElementAndNothingElse) {
  with_cpu_arch(GetParam(), [](auto arch) {
    using A = decltype(arch);
    seeded_rng seeded;
    // Full 16 x 16 blocks, partial edges, a single row or column, padded strides.
    const std::int64_t shapes[][4] = {{16, 16, 16, 16}, {64, 128, 131, 70}, {37, 45, 48, 40}, {1, 33, 33, 1}, {20, 1, 3, 21}};
    for (const auto& sh : shapes) {
      const std::int64_t rows = sh[0], cols = sh[1], lds = sh[2], ldd = sh[3];
      std::vector<float> src(rows * lds), dst(cols * ldd);
      fill_normal(src.data(), static_cast<std::int64_t>(src.size()), seeded.rng);
      const float sentinel = 12345.0f;  // not a normal draw: any write past rows shows
      std::fill(dst.begin(), dst.end(), sentinel);
      simd::transpose<A>(src.data(), lds, rows, cols, dst.data(), ldd);
      for (std::int64_t c = 0; c < cols; ++c)
        for (std::int64_t r = 0; r < ldd; ++r)
          ASSERT_EQ(dst[c * ldd + r], r < rows ? src[r * lds + c] : sentinel)
              << rows << " x " << cols << " at (" << c << ", " << r << ")";
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

/// The 8-bit KV types: every code, each lane position, against to_float (NaN codes stay NaN).
template <class T, class A>
void expect_widening_exact_8bit() {
  constexpr int L = simd::lanes<A>;
  alignas(64) float out[L];
  for (std::uint32_t base = 0; base < 256 + L; ++base) {  // every code at every lane
    T in[L];
    for (int i = 0; i < L; ++i) std::memset(&in[i], static_cast<int>((base + i * 37) & 0xff), 1);
    simd::load_widen<A>(in).store_aligned(out);
    for (int i = 0; i < L; ++i) {
      const float expect = to_float(in[i]);
      if (std::isnan(expect))
        ASSERT_TRUE(std::isnan(out[i])) << dtype_name<T>() << " code " << ((base + i * 37) & 0xff);
      else
        ASSERT_EQ(std::memcmp(&out[i], &expect, sizeof expect), 0) << dtype_name<T>() << " code "
                                                                    << ((base + i * 37) & 0xff);
    }
  }
}

TEST_P(CpuSimd, WideningIsExactForEveryBitPattern) {
  with_cpu_arch(GetParam(), [](auto arch) {
    using A = decltype(arch);
    expect_widening_exact<half, A>();
    expect_widening_exact<bfloat16, A>();
    expect_widening_exact_8bit<std::int8_t, A>();
    expect_widening_exact_8bit<fp8_e4m3, A>();
    expect_widening_exact_8bit<fp8_e5m2, A>();
  });
}

INSTANTIATE_TEST_SUITE_P(Archs, CpuSimd, ::testing::ValuesIn(compiled_cpu_archs()),
                         [](const auto& info) { return std::string(cpu_arch_name(info.param)); });

}  // namespace
}  // namespace attnkit::test
