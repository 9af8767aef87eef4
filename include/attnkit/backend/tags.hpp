// Backend policy tags: the last argument of a kernel call picks the implementation.
#pragma once

#include "attnkit/core/config.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/workspace.hpp"

#if ATTNKIT_HAS_XSIMD
#include <xsimd/xsimd.hpp>

#include "attnkit/backend/cpu/arch.hpp"
#endif

// cudaStream_t is CUstream_st*: naming it keeps this header free of CUDA's.
struct CUstream_st;

ATTNKIT_BEGIN_NAMESPACE

/// Plain scalar C++: the algorithm as a reader should learn it, and the oracle's twin.
struct reference {};

/// SIMD kernels on xsimd::batch<float, Arch> (attnkit::avx512bf16, xsimd::avx512bw,
/// xsimd::fma3<xsimd::avx2>, or cpu_native below). `exec` runs the work items; `scratch` lends the kernel
/// its workspace (size from the kernel's *_workspace_size), or stays empty and
/// the kernel allocates per call. Arch must be one the translation unit is
/// compiled for; cpu_dispatch picks one at run time instead.
template <class Arch>
struct cpu {
  executor exec = default_executor();
  workspace scratch = {};
  // After the members: clang then reports this assertion alone, not their absence too.
#if ATTNKIT_HAS_XSIMD
  static_assert(Arch::supported(),
                "attnkit::cpu<Arch>: this translation unit is not compiled for Arch. Compile it with Arch's "
                "flags (avx512bw: -mavx512f -mavx512cd -mavx512dq -mavx512bw; avx512bf16: those and -mavx512bf16; "
                "fma3<avx2>: -mavx2 -mfma -mf16c; "
                "or -march=...), use attnkit::cpu_native (the best arch of these flags), or attnkit::cpu_dispatch "
                "(attnkit/cpu_dispatch.hpp, the best arch of the running CPU)");
#endif
};

#if ATTNKIT_HAS_XSIMD
/// cpu<Arch> for the best arch this translation unit's flags allow (avx512bf16
/// where they include -mavx512bf16, else xsimd's default arch).
using cpu_native = cpu<native_arch>;
#else
/// Without xsimd the best backend compiled in is the reference.
using cpu_native = reference;
#endif

/// The best cpu<Arch> the running CPU has, chosen at run time; its calls are
/// declared in attnkit/cpu_dispatch.hpp and compiled by attnkit_add_cpu_dispatch().
struct cpu_dispatch {
  executor exec = default_executor();
  workspace scratch = {};
};

/// CUDA kernels over views of device memory (attnkit/attention/flash_cuda.cuh,
/// compiled by nvcc). Work is queued on `stream` (null: the default stream);
/// `scratch` is device memory of at least the call's workspace_size, which the
/// kernels use instead of allocating. A call never synchronizes.
struct cuda {
  CUstream_st* stream = nullptr;  // a cudaStream_t
  workspace scratch = {};
};

/// Whether B is a backend tag (the last argument of a kernel call).
template <class B>
inline constexpr bool is_backend_v = false;
template <>
inline constexpr bool is_backend_v<reference> = true;
template <class Arch>
inline constexpr bool is_backend_v<cpu<Arch>> = true;
template <>
inline constexpr bool is_backend_v<cpu_dispatch> = true;
template <>
inline constexpr bool is_backend_v<cuda> = true;

ATTNKIT_END_NAMESPACE
