// The arch tags of cpu<Arch> beyond xsimd's own, and cpu_native's arch.
//
// xsimd 8.1 has no tag for AVX512_BF16, so attnkit names one: avx512bf16 is
// AVX-512BW plus vdpbf16ps (a dot product of bf16 pairs into fp32 lanes, twice
// the fp32 FMA rate). Its registers and every xsimd operation are avx512bw's
// (simd_arch_t); only the verbs that need the pair dot (bf16_dot.hpp) ask for
// the tag itself.
#pragma once

#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// AVX-512BW + AVX512_BF16 (-mavx512f -mavx512cd -mavx512dq -mavx512bw -mavx512bf16).
struct avx512bf16 : xsimd::avx512bw {
#if XSIMD_WITH_AVX512BW && defined(__AVX512BF16__)
  static constexpr bool supported() noexcept { return true; }
#else
  static constexpr bool supported() noexcept { return false; }
#endif
  static constexpr char const* name() noexcept { return "avx512bf16"; }
};

/// The xsimd arch whose registers and operations Arch uses.
template <class Arch>
struct simd_arch {
  using type = Arch;
};
template <>
struct simd_arch<avx512bf16> {
  using type = xsimd::avx512bw;
};
template <class Arch>
using simd_arch_t = typename simd_arch<Arch>::type;

/// Whether Arch has the bf16 pair dot product.
template <class Arch>
inline constexpr bool has_bf16_dot = std::is_same_v<Arch, avx512bf16>;

/// The best arch of this translation unit's flags.
using native_arch = std::conditional_t<avx512bf16::supported(), avx512bf16, xsimd::default_arch>;

ATTNKIT_END_NAMESPACE
