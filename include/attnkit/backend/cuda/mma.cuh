// Warp-level tensor-core verbs of the cuda backend (sm_80 and newer): the
// m16n8k16 MMA with fp32 accumulate, ldmatrix loads of its fragments from
// shared memory, and packing fp32 pairs into 16-bit pairs. Fragment layouts
// (PTX ISA, "mma.m16n8k16"): lane l holds, of a 16x8 fp32 C tile, rows l/4 and
// l/4 + 8 at columns 2*(l%4) and 2*(l%4) + 1; of a 16x16 A tile, the same rows
// at columns 2*(l%4) + {0, 1, 8, 9}; of a 16x8 B tile (stored n-major: one
// row per n), rows (n) l/4 at k = 2*(l%4) + {0, 1, 8, 9}.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace cuda_verbs {

/// The 16-bit input types the MMA takes: half (f16) and bfloat16 (bf16).
template <class T>
struct mma_type;
template <>
struct mma_type<half> {
  __device__ static std::uint32_t pack(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&h);
  }
};
template <>
struct mma_type<bfloat16> {
  __device__ static std::uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&h);
  }
};

/// c += a * b for one 16x8x16 tile: a 4 registers (16x16), b 2 (16x8), c 4 floats (16x8).
template <class T>
__device__ ATTNKIT_INLINE void mma_16816(float (&c)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                          std::uint32_t b1) {
  if constexpr (std::is_same_v<T, half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ ATTNKIT_INLINE std::uint32_t smem_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// Four 8x8 16-bit matrices; lane l gives the row address of matrix l/8, row l%8.
__device__ ATTNKIT_INLINE void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/// ldmatrix_x4, each 8x8 matrix transposed (V tiles stored key-major feed B as n-major).
__device__ ATTNKIT_INLINE void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

/// 16 bytes global -> shared, asynchronously; bytes past `valid` (0 or 16) are zero-filled.
__device__ ATTNKIT_INLINE void copy_16_async(std::uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ ATTNKIT_INLINE void copy_commit() { asm volatile("cp.async.commit_group;\n" ::); }
/// Waits until at most N committed groups are still in flight.
template <int N>
__device__ ATTNKIT_INLINE void copy_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/// Max and sum over the four lanes of a quad (the lanes that share an MMA row).
__device__ ATTNKIT_INLINE float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ ATTNKIT_INLINE float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace cuda_verbs
ATTNKIT_END_NAMESPACE
