// fp8 e4m3 and e5m2: every code widens to the value its format defines
// (computed here from the definition), every finite code round-trips, and
// narrowing from float rounds to nearest even with the stated saturation and
// NaN rule, checked against a search over all codes.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/core/dtype.hpp"
#include "support/quantized_kv.hpp"
#include "support/random.hpp"

namespace attnkit::test {
namespace {

template <class F8>
constexpr double largest() {
  return std::is_same_v<F8, fp8_e4m3> ? 448.0 : 57344.0;
}

/// The code nearest to x, ties to the even code, beyond the largest finite value
/// the largest: a search over every non-negative finite code.
template <class F8>
std::uint8_t nearest_code(float x) {
  const double ax = std::abs(static_cast<double>(x));
  const std::uint8_t sign = std::signbit(x) ? 0x80 : 0;
  if (ax >= largest<F8>()) return static_cast<std::uint8_t>(sign | (std::is_same_v<F8, fp8_e4m3> ? 0x7e : 0x7b));
  int best = 0;
  double best_d = std::numeric_limits<double>::infinity();
  for (int c = 0; c < 128; ++c) {
    const double v = fp8_value<F8>(static_cast<std::uint8_t>(c));
    if (!std::isfinite(v)) continue;
    const double dist = std::abs(v - ax);
    if (dist < best_d || (dist == best_d && c % 2 == 0)) best = c, best_d = dist;
  }
  return static_cast<std::uint8_t>(sign | best);
}

template <class F8>
void expect_every_code_round_trips() {
  for (int c = 0; c < 256; ++c) {
    const auto bits = static_cast<std::uint8_t>(c);
    const double exact = fp8_value<F8>(bits);
    const float x = to_float(F8::from_bits(bits));
    if (std::isnan(exact)) {
      ASSERT_TRUE(std::isnan(x)) << c;
      ASSERT_TRUE(std::isnan(to_float(F8(x)))) << c << ": NaN must stay NaN";
      continue;
    }
    ASSERT_EQ(static_cast<double>(x), exact) << c;
    ASSERT_EQ(std::signbit(x), (c & 0x80) != 0) << c;  // -0 stays -0
    if (std::isinf(exact))  // e5m2 infinities: narrowing saturates them to the largest finite value
      ASSERT_EQ(to_float(F8(x)), std::copysign(static_cast<float>(largest<F8>()), x)) << c;
    else
      ASSERT_EQ(F8(x).bits, bits) << c;
  }
}

template <class F8>
void expect_rounding_matches_search() {
  const std::uint64_t seed = fresh_seed();
  SCOPED_TRACE(seed_note(seed));
  std::mt19937_64 rng(seed);
  std::vector<float> probes;
  std::vector<double> values;
  for (int c = 0; c < 128; ++c)
    if (std::isfinite(fp8_value<F8>(static_cast<std::uint8_t>(c)))) values.push_back(fp8_value<F8>(c));
  for (std::size_t i = 0; i + 1 < values.size(); ++i) {
    const float mid = static_cast<float>((values[i] + values[i + 1]) / 2);  // exact in float
    for (float x : {static_cast<float>(values[i]), mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)})
      probes.push_back(x), probes.push_back(-x);
  }
  // Around and far beyond the largest value, and far below the smallest subnormal.
  for (float x : {static_cast<float>(largest<F8>()), std::nextafter(static_cast<float>(largest<F8>()), INFINITY),
                  static_cast<float>(largest<F8>() * 1.1), 1e30f, std::numeric_limits<float>::max(),
                  std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(), 0.0f, -0.0f})
    probes.push_back(x), probes.push_back(-x);
  std::uniform_int_distribution<std::uint32_t> any;
  std::normal_distribution<float> normal(0.0f, 100.0f);
  for (int i = 0; i < 200'000; ++i) {
    std::uint32_t u = any(rng);
    float x;
    std::memcpy(&x, &u, 4);
    if (std::isfinite(x)) probes.push_back(x);
    probes.push_back(normal(rng));
  }
  for (float x : probes) ASSERT_EQ(F8(x).bits, nearest_code<F8>(x)) << x;
  for (float inf : {INFINITY, -INFINITY})
    EXPECT_EQ(to_float(F8(inf)), std::copysign(static_cast<float>(largest<F8>()), inf)) << "inf saturates";
  for (float nan : {std::nanf(""), -std::nanf("")}) EXPECT_TRUE(std::isnan(to_float(F8(nan))));
}

TEST(Fp8, E4m3EveryCodeRoundTrips) { expect_every_code_round_trips<fp8_e4m3>(); }
TEST(Fp8, E5m2EveryCodeRoundTrips) { expect_every_code_round_trips<fp8_e5m2>(); }
TEST(Fp8, E4m3RoundsToNearestEvenAndSaturates) { expect_rounding_matches_search<fp8_e4m3>(); }
TEST(Fp8, E5m2RoundsToNearestEvenAndSaturates) { expect_rounding_matches_search<fp8_e5m2>(); }

TEST(Fp8, E5m2IsTheTopByteOfBinary16) {
  for (int c = 0; c < 256; ++c) {
    const float a = to_float(fp8_e5m2::from_bits(static_cast<std::uint8_t>(c)));
    const float b = to_float(half::from_bits(static_cast<std::uint16_t>(c << 8)));
    if (std::isnan(b))
      EXPECT_TRUE(std::isnan(a)) << c;
    else
      EXPECT_EQ(a, b) << c;
  }
}

}  // namespace
}  // namespace attnkit::test
