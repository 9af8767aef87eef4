// Random test inputs with fresh seeds. Every run draws a new seed unless
// ATTNKIT_TEST_SEED is set; tests print the seed on failure (SCOPED_TRACE) so a
// failing run can be replayed.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/tensor.hpp"

namespace attnkit::test {

inline std::uint64_t fresh_seed() {
  if (const char* env = std::getenv("ATTNKIT_TEST_SEED")) return std::stoull(env);
  std::random_device rd;
  return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

inline std::string seed_note(std::uint64_t seed) { return "replay with ATTNKIT_TEST_SEED=" + std::to_string(seed); }

/// Fills n elements with normal(mean, stddev) values rounded to T.
template <class T>
void fill_normal(T* data, std::int64_t n, std::mt19937_64& rng, float mean = 0.0f, float stddev = 1.0f) {
  std::normal_distribution<float> dist(mean, stddev);
  for (std::int64_t i = 0; i < n; ++i) data[i] = from_float<T>(dist(rng));
}

/// A flat buffer of n random elements.
template <class T>
tensor<T, 1> random_buffer(std::int64_t n, std::mt19937_64& rng, float stddev = 1.0f) {
  tensor<T, 1> t({n});
  fill_normal(t.data(), n, rng, 0.0f, stddev);
  return t;
}

}  // namespace attnkit::test
