// f(backend) on the reference backend and on this binary's cpu<Arch> (two
// threads): the backends a test of an input form runs against the oracle.
#pragma once

#include "attnkit/backend/tags.hpp"
#include "support/cpu_archs.hpp"
#include "support/paged_copy.hpp"

namespace attnkit::test {

template <class F>
void on_every_backend(F&& f) {
  f(reference{});
  for (cpu_arch a : compiled_cpu_archs())
    with_cpu_arch(a, [&](auto arch) { f(cpu<decltype(arch)>{two_threads()}); });
}

}  // namespace attnkit::test
