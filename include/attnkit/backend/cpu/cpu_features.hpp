// What the running CPU can execute, for run-time arch choice and for tests
// that skip archs the CPU lacks.
//
// xsimd::available_architectures() reads CPUID (xsimd 8.1's Arch::available()
// is constexpr true: it says nothing about the running CPU). Three things it
// does not read are added here: F16C, which the AVX2 kernels are compiled with
// (-mf16c), AVX512_BF16 (the avx512bf16 kernels), and whether the OS saves the
// YMM / ZMM registers (XCR0), without which AVX instructions fault even on a CPU that has them.
#pragma once

#include <string>

#include <xsimd/xsimd.hpp>

#include "attnkit/core/config.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

ATTNKIT_BEGIN_NAMESPACE

/// The SIMD features the cpu<Arch> kernels are compiled for, as this CPU and OS have them.
struct cpu_features {
  bool avx2 = false, fma = false, f16c = false;                         // and the OS saves YMM
  bool avx512f = false, avx512cd = false, avx512dq = false, avx512bw = false;  // and the OS saves ZMM
  bool avx512bf16 = false;                                                     // and the OS saves ZMM

  /// What the AVX2 kernels need (-mavx2 -mfma -mf16c).
  bool has_avx2_kernels() const { return avx2 && fma && f16c; }
  /// What the AVX-512 kernels need (-mavx512f -mavx512cd -mavx512dq -mavx512bw, and the AVX2 set).
  bool has_avx512_kernels() const {
    return has_avx2_kernels() && avx512f && avx512cd && avx512dq && avx512bw;
  }
  /// What the avx512bf16 kernels need: the AVX-512 set and AVX512_BF16 (-mavx512bf16).
  bool has_avx512bf16_kernels() const { return has_avx512_kernels() && avx512bf16; }

  /// The features of the AVX2 kernels' set this CPU lacks, comma separated ("" when none).
  std::string missing_for_avx2_kernels() const {
    std::string out;
    const auto add = [&](bool has, const char* name) {
      if (!has) out += (out.empty() ? "" : ", ") + std::string(name);
    };
    add(avx2, "AVX2");
    add(fma, "FMA");
    add(f16c, "F16C");
    return out;
  }
};

/// Reads the running CPU's features (CPUID and XCR0); cheap, but callers on hot paths cache it.
inline cpu_features detect_cpu_features() {
  cpu_features f;
#if defined(__x86_64__) || defined(__i386__)
  const auto arch = xsimd::available_architectures();
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = (ecx >> 27) & 1u;
  unsigned long long xcr0 = 0;
  if (osxsave) {
    unsigned lo = 0, hi = 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (static_cast<unsigned long long>(hi) << 32) | lo;
  }
  const bool os_ymm = (xcr0 & 0x6u) == 0x6u;     // SSE and AVX state
  const bool os_zmm = (xcr0 & 0xe6u) == 0xe6u;   // and opmask, ZMM0-15 high halves, ZMM16-31
  f.avx2 = os_ymm && arch.avx2;
  f.fma = os_ymm && arch.fma3_avx2;
  f.f16c = os_ymm && ((ecx >> 29) & 1u);
  f.avx512f = os_zmm && arch.avx512f;
  f.avx512cd = os_zmm && arch.avx512cd;
  f.avx512dq = os_zmm && arch.avx512dq;
  f.avx512bw = os_zmm && arch.avx512bw;
  unsigned leaf7_eax = 0;  // leaf 7, sub-leaf 1: EAX bit 5 is AVX512_BF16 (xsimd 8.1 does not read it)
  if (__get_cpuid_count(7, 1, &leaf7_eax, &ebx, &ecx, &edx)) f.avx512bf16 = os_zmm && ((leaf7_eax >> 5) & 1u);
#endif
  return f;
}

ATTNKIT_END_NAMESPACE
