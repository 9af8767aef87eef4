// Backend policy tags: the last argument of a kernel call picks the implementation.
#pragma once

namespace attnkit {

/// Plain scalar C++: the algorithm as a reader should learn it, and the oracle's twin.
struct reference {};

}  // namespace attnkit
