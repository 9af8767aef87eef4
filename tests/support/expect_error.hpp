// Checks that a call throws attnkit::error with exactly the expected message.
#pragma once

#include <string>

#include <gtest/gtest.h>

#include "attnkit/core/error.hpp"

namespace attnkit::test {

template <class Call>
void expect_error(Call&& call, const std::string& message) {
  try {
    call();
    ADD_FAILURE() << "no error; expected: " << message;
  } catch (const error& e) {
    EXPECT_EQ(std::string(e.what()), message);
  }
}

}  // namespace attnkit::test
