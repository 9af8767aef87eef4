// A generator on a fresh seed that every failure in its scope names, so a
// failing run can be replayed with ATTNKIT_TEST_SEED.
#pragma once

#include <cstdint>
#include <random>

#include <gtest/gtest.h>

#include "support/random.hpp"

namespace attnkit::test {

struct seeded_rng {
  std::uint64_t seed = fresh_seed();
  ::testing::ScopedTrace trace{__FILE__, __LINE__, seed_note(seed)};
  std::mt19937_64 rng{seed};
};

}  // namespace attnkit::test
