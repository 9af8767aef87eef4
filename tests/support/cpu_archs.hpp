// The SIMD arch this test binary tests, as a runtime parameter, so
// value-parameterized suites can name it. Each arch's binary is compiled with
// that arch's flags and nothing wider (tests/CMakeLists.txt defines
// ATTNKIT_TEST_ARCH_AVX512BF16, ATTNKIT_TEST_ARCH_AVX512 or ATTNKIT_TEST_ARCH_AVX2); the arch is skipped,
// by the real CPU check, where the running CPU lacks it.
#pragma once

#include <ostream>
#include <vector>

#include <gtest/gtest.h>
#include <xsimd/xsimd.hpp>

#include "attnkit/backend/cpu/arch.hpp"
#include "attnkit/backend/cpu/cpu_features.hpp"

namespace attnkit::test {

enum class cpu_arch { avx512bf16, avx512, avx2 };

inline const char* cpu_arch_name(cpu_arch a) {
  return a == cpu_arch::avx512bf16 ? "avx512bf16" : a == cpu_arch::avx512 ? "avx512" : "avx2";
}
inline std::ostream& operator<<(std::ostream& out, cpu_arch a) { return out << cpu_arch_name(a); }

inline std::vector<cpu_arch> compiled_cpu_archs() {
#if defined(ATTNKIT_TEST_ARCH_AVX512BF16)
  static_assert(avx512bf16::supported(), "the avx512bf16 tests need -mavx512bf16 and the AVX-512 flags");
  return {cpu_arch::avx512bf16};
#elif defined(ATTNKIT_TEST_ARCH_AVX512)
  static_assert(XSIMD_WITH_AVX512BW && !avx512bf16::supported(), "the AVX-512 tests need -mavx512bw and the rest of "
                                                                 "its flags, without -mavx512bf16");
  return {cpu_arch::avx512};
#elif defined(ATTNKIT_TEST_ARCH_AVX2)
  static_assert(XSIMD_WITH_FMA3_AVX2 && !XSIMD_WITH_AVX512F, "the AVX2 tests are compiled with AVX2 flags only");
  return {cpu_arch::avx2};
#else
  static_assert(sizeof(cpu_arch) == 0, "define ATTNKIT_TEST_ARCH_AVX512BF16, _AVX512 or _AVX2");
  return {};
#endif
}

/// Calls f(Arch{}) for the xsimd arch behind a; skips the test when this CPU lacks it.
template <class F>
void with_cpu_arch(cpu_arch a, F&& f) {
  static const cpu_features cpu = detect_cpu_features();
#if defined(ATTNKIT_TEST_ARCH_AVX512BF16)
  if (a == cpu_arch::avx512bf16) {
    if (!cpu.has_avx512bf16_kernels()) GTEST_SKIP() << "this CPU has no AVX-512BW with AVX512_BF16";
    return f(avx512bf16{});
  }
#elif defined(ATTNKIT_TEST_ARCH_AVX512)
  if (a == cpu_arch::avx512) {
    if (!cpu.has_avx512_kernels()) GTEST_SKIP() << "this CPU has no AVX-512BW";
    return f(xsimd::avx512bw{});
  }
#elif defined(ATTNKIT_TEST_ARCH_AVX2)
  if (a == cpu_arch::avx2) {
    if (!cpu.has_avx2_kernels()) GTEST_SKIP() << "this CPU lacks " << cpu.missing_for_avx2_kernels();
    return f(xsimd::fma3<xsimd::avx2>{});
  }
#endif
  FAIL() << cpu_arch_name(a) << " is not compiled in";
}

}  // namespace attnkit::test
