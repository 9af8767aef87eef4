// Backend policy tags: the last argument of a kernel call picks the implementation.
#pragma once

#include "attnkit/core/parallel.hpp"
#include "attnkit/core/workspace.hpp"

namespace attnkit {

/// Plain scalar C++: the algorithm as a reader should learn it, and the oracle's twin.
struct reference {};

/// SIMD kernels on xsimd::batch<float, Arch> (include attnkit/backend/cpu/arch.hpp
/// for the arch list). `exec` runs the work items; `scratch` lends the kernel its
/// workspace (size from the kernel's *_workspace_size), or stays empty and the
/// kernel allocates per call.
template <class Arch>
struct cpu {
  executor exec = default_executor();
  workspace scratch = {};
};

}  // namespace attnkit
