// attnkit::error and ATTNKIT_CHECK: argument validation on public entry points.
//
// A failed check throws attnkit::error (or, with ATTNKIT_NO_EXCEPTIONS, prints the
// message and aborts). Checks run before any output is written and are never
// compiled out. Two tiers: metadata checks (shapes, strides, parameters) cost
// O(1) per call; content checks read what a call is given and cost O(n) in it
// (page tables and their ids, linear-attention gates, cu_seqlens), each
// documented where it is made.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

#include "attnkit/core/config.hpp"

#if defined(ATTNKIT_NO_EXCEPTIONS)
#include <cstdio>
#include <cstdlib>
#endif

ATTNKIT_BEGIN_NAMESPACE

/// Thrown on a shape, stride, dtype or parameter mistake. The message names the
/// function, the argument, the expected and the actual value.
class error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

namespace detail {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

[[noreturn]] inline void fail(const std::string& message) {
#if defined(ATTNKIT_NO_EXCEPTIONS)
  std::fprintf(stderr, "attnkit: %s\n", message.c_str());
  std::abort();
#else
  throw error("attnkit: " + message);
#endif
}

}  // namespace detail
ATTNKIT_END_NAMESPACE

/// ATTNKIT_CHECK(cond, parts...): fail with the concatenated parts unless cond holds.
#define ATTNKIT_CHECK(cond, ...)                              \
  do {                                                        \
    if (!(cond)) ::attnkit::detail::fail(::attnkit::detail::concat(__VA_ARGS__)); \
  } while (false)
