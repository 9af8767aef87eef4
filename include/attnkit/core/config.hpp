// Version, portability macros and feature switches shared by every header.
#pragma once

#define ATTNKIT_VERSION_MAJOR 0
#define ATTNKIT_VERSION_MINOR 1
#define ATTNKIT_VERSION_PATCH 0

// Everything attnkit declares sits in an inline namespace named by
// ATTNKIT_ARCH_NAMESPACE. Code sees plain attnkit::names; the linker sees one
// copy per arch. A translation unit compiled with other arch flags than the
// rest of its program (the ones attnkit_add_cpu_dispatch adds) defines it
// first, so the linker can never hand an AVX-512 copy of a helper to the AVX2
// path or to baseline code (the role of PyTorch's CPU_CAPABILITY and Highway's
// HWY_NAMESPACE). Every other translation unit keeps the default.
#if !defined(ATTNKIT_ARCH_NAMESPACE)
#define ATTNKIT_ARCH_NAMESPACE native
#endif
#define ATTNKIT_BEGIN_NAMESPACE \
  namespace attnkit {           \
  inline namespace ATTNKIT_ARCH_NAMESPACE {
#define ATTNKIT_END_NAMESPACE \
  }                           \
  }

// Hooks that CUDA kernels call as well as host code carry this.
#if defined(__CUDACC__)
#define ATTNKIT_HOST_DEVICE __host__ __device__
#else
#define ATTNKIT_HOST_DEVICE
#endif

#if defined(_MSC_VER)
#define ATTNKIT_INLINE __forceinline
#else
#define ATTNKIT_INLINE inline __attribute__((always_inline))
#endif

// Exceptions are on unless the build says otherwise (-fno-exceptions or ATTNKIT_NO_EXCEPTIONS).
#if !defined(ATTNKIT_NO_EXCEPTIONS) && !defined(__cpp_exceptions) && !defined(__EXCEPTIONS)
#define ATTNKIT_NO_EXCEPTIONS
#endif

// The SIMD CPU backend needs xsimd's headers; define ATTNKIT_HAS_XSIMD=0 to build without it.
#if !defined(ATTNKIT_HAS_XSIMD)
#if defined(__has_include) && !defined(__CUDACC__)
#if __has_include(<xsimd/xsimd.hpp>)
#define ATTNKIT_HAS_XSIMD 1
#endif
#endif
#endif
#if !defined(ATTNKIT_HAS_XSIMD)
#define ATTNKIT_HAS_XSIMD 0
#endif
