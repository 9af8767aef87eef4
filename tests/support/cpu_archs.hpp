// The SIMD archs this test binary was compiled for, as a runtime parameter, so
// value-parameterized suites can sweep them. Archs the CPU lacks are skipped.
#pragma once

#include <ostream>
#include <vector>

#include <gtest/gtest.h>
#include <xsimd/xsimd.hpp>

namespace attnkit::test {

enum class cpu_arch { avx512, avx2 };

inline const char* cpu_arch_name(cpu_arch a) { return a == cpu_arch::avx512 ? "avx512" : "avx2"; }
inline std::ostream& operator<<(std::ostream& out, cpu_arch a) { return out << cpu_arch_name(a); }

inline std::vector<cpu_arch> compiled_cpu_archs() {
  std::vector<cpu_arch> archs;
#if XSIMD_WITH_AVX512BW
  archs.push_back(cpu_arch::avx512);
#endif
#if XSIMD_WITH_FMA3_AVX2
  archs.push_back(cpu_arch::avx2);
#endif
  return archs;
}

/// Calls f(Arch{}) for the xsimd arch behind a; skips the test when this CPU lacks it.
template <class F>
void with_cpu_arch(cpu_arch a, F&& f) {
#if XSIMD_WITH_AVX512BW
  if (a == cpu_arch::avx512) {
    if (!xsimd::avx512bw::available()) GTEST_SKIP() << "this CPU has no AVX-512BW";
    return f(xsimd::avx512bw{});
  }
#endif
#if XSIMD_WITH_FMA3_AVX2
  if (a == cpu_arch::avx2) {
    if (!xsimd::fma3<xsimd::avx2>::available()) GTEST_SKIP() << "this CPU has no AVX2+FMA";
    return f(xsimd::fma3<xsimd::avx2>{});
  }
#endif
  FAIL() << cpu_arch_name(a) << " is not compiled in";
}

}  // namespace attnkit::test
