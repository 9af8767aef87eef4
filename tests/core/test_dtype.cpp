// half and bfloat16: every bit pattern round-trips through float and widens to
// its exact value; float -> 16 bit rounds to nearest even, checked against an
// independent oracle (exact values in double) and, for half, against F16C.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "attnkit/backend/cpu/cpu_features.hpp"
#include "attnkit/core/dtype.hpp"
#include "support/random.hpp"

namespace attnkit {
namespace {

float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// A 16-bit format described by its field widths; value() follows the IEEE formula directly.
struct format16 {
  int exp_bits, man_bits;
  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  std::uint16_t inf_bits() const { return static_cast<std::uint16_t>(((1u << exp_bits) - 1) << man_bits); }

  double value(std::uint16_t x) const {
    const int e = (x >> man_bits) & ((1 << exp_bits) - 1);
    const int m = x & ((1 << man_bits) - 1);
    const double sign = (x & 0x8000) ? -1.0 : 1.0;
    if (e == (1 << exp_bits) - 1) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
    if (e == 0) return sign * std::ldexp(m, 1 - bias() - man_bits);
    return sign * std::ldexp((1 << man_bits) + m, e - bias() - man_bits);
  }

  /// Round-to-nearest-even of a finite x, by search over the positive finite values.
  std::uint16_t nearest(float x, const std::vector<double>& positives) const {
    const double ax = std::abs(static_cast<double>(x));
    const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    // positives[i] is the value of bits i; one past the largest finite stands for the
    // first value the exponent range no longer holds, so rounding there means inf.
    const auto hi = std::lower_bound(positives.begin(), positives.end(), ax) - positives.begin();
    if (hi == static_cast<std::ptrdiff_t>(positives.size())) return static_cast<std::uint16_t>(sign | inf_bits());
    if (positives[hi] == ax) return static_cast<std::uint16_t>(sign | hi);
    const auto lo = hi - 1;
    const double dl = ax - positives[lo], dh = positives[hi] - ax;
    const auto pick = dl < dh ? lo : dh < dl ? hi : (lo % 2 == 0 ? lo : hi);
    return static_cast<std::uint16_t>(sign | pick);
  }

  std::vector<double> positive_values() const {
    std::vector<double> v;
    for (std::uint32_t b = 0; b < inf_bits(); ++b) v.push_back(value(static_cast<std::uint16_t>(b)));
    v.push_back(std::ldexp(1.0, (1 << exp_bits) - 1 - bias()));  // 2^(emax + 1)
    return v;
  }
};

constexpr format16 half_format{5, 10};
constexpr format16 bf16_format{8, 7};

template <class T>
std::uint16_t round_to_bits(float x) {
  return from_float<T>(x).bits;
}

/// Floats that probe rounding: each value, each midpoint and its float neighbours, plus random bit patterns.
std::vector<float> rounding_probes(const format16& f, std::mt19937_64& rng) {
  std::vector<float> probes;
  const auto pos = f.positive_values();
  for (std::size_t i = 0; i + 1 < pos.size(); ++i) {
    const float mid = static_cast<float>((pos[i] + pos[i + 1]) / 2);  // exact: needs one more bit than f has
    for (float x : {static_cast<float>(pos[i]), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      probes.push_back(x);
      probes.push_back(-x);
    }
  }
  std::uniform_int_distribution<std::uint32_t> any;
  for (int i = 0; i < 1'000'000; ++i) {
    const float x = float_of(any(rng));
    if (std::isfinite(x)) probes.push_back(x);
  }
  for (float x : {0.0f, -0.0f, std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min(),
                  std::numeric_limits<float>::min()})
    probes.push_back(x);
  return probes;
}

template <class T>
void expect_exhaustive_round_trip(const format16& f) {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const auto bits = static_cast<std::uint16_t>(b);
    const float x = to_float(T::from_bits(bits));
    const double exact = f.value(bits);
    if (std::isnan(exact)) {
      ASSERT_TRUE(std::isnan(x)) << std::hex << b;
    } else {
      ASSERT_EQ(static_cast<double>(x), exact) << std::hex << b;
      ASSERT_EQ(std::signbit(x), (b & 0x8000) != 0) << std::hex << b;  // -0 stays -0
    }
    ASSERT_EQ(round_to_bits<T>(x), bits) << std::hex << b;  // NaN payloads too
  }
}

template <class T>
void expect_rounding_matches_oracle(const format16& f) {
  const std::uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  const auto positives = f.positive_values();
  for (float x : rounding_probes(f, rng)) ASSERT_EQ(round_to_bits<T>(x), f.nearest(x, positives)) << x;
  for (float x : {INFINITY, -INFINITY}) EXPECT_EQ(round_to_bits<T>(x), (x < 0 ? 0x8000 : 0) | f.inf_bits());
  for (std::uint32_t nan : {0x7fc00000u, 0xffc00001u, 0x7f800001u, 0x7fa00000u}) {
    const float back = to_float(from_float<T>(float_of(nan)));
    EXPECT_TRUE(std::isnan(back)) << std::hex << nan;
    EXPECT_EQ(std::signbit(back), (nan >> 31) != 0);
  }
}

TEST(Dtype, HalfEveryBitPatternRoundTrips) { expect_exhaustive_round_trip<half>(half_format); }
TEST(Dtype, Bfloat16EveryBitPatternRoundTrips) { expect_exhaustive_round_trip<bfloat16>(bf16_format); }
TEST(Dtype, HalfRoundsToNearestEven) { expect_rounding_matches_oracle<half>(half_format); }
TEST(Dtype, Bfloat16RoundsToNearestEven) { expect_rounding_matches_oracle<bfloat16>(bf16_format); }

TEST(Dtype, HalfKnownValues) {
  EXPECT_EQ(round_to_bits<half>(1.0f), 0x3c00);
  EXPECT_EQ(round_to_bits<half>(65504.0f), 0x7bff);
  EXPECT_EQ(round_to_bits<half>(65519.99f), 0x7bff);
  EXPECT_EQ(round_to_bits<half>(65520.0f), 0x7c00);               // the tie above the max rounds to inf
  EXPECT_EQ(round_to_bits<half>(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(round_to_bits<half>(std::ldexp(1.0f, -25)), 0x0000);  // tie to even: zero
  EXPECT_EQ(round_to_bits<half>(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(round_to_bits<half>(-0.0f), 0x8000);
  EXPECT_EQ(round_to_bits<bfloat16>(1.0f), 0x3f80);
  EXPECT_EQ(round_to_bits<bfloat16>(float_of(0x3f808000u)), 0x3f80);  // tie, even below
  EXPECT_EQ(round_to_bits<bfloat16>(float_of(0x3f818000u)), 0x3f82);  // tie, even above
  EXPECT_EQ(round_to_bits<bfloat16>(std::numeric_limits<float>::max()), 0x7f80);
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("f16c"))) std::uint16_t f16c_round(float x) {
  return static_cast<std::uint16_t>(_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(x), _MM_FROUND_TO_NEAREST_INT), 0));
}

TEST(Dtype, HalfAgreesWithF16cHardware) {
  if (!detect_cpu_features().f16c) GTEST_SKIP() << "CPU has no F16C";
  const std::uint64_t seed = test::fresh_seed();
  SCOPED_TRACE(test::seed_note(seed));
  std::mt19937_64 rng(seed);
  for (float x : rounding_probes(half_format, rng)) ASSERT_EQ(round_to_bits<half>(x), f16c_round(x)) << x;
}
#endif

}  // namespace
}  // namespace attnkit
