// The dot products the sparse producers score with (HiP's representatives
// against a block's query rows, Routing's vectors against its centroids), on
// the producer's backend: a plain loop on reference, one register-blocked
// product on cpu<Arch>; and the executor a backend runs work items on.
#pragma once

#include <algorithm>
#include <cstdint>

#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/parallel.hpp"

#if ATTNKIT_HAS_XSIMD
#include "attnkit/backend/cpu/flash_tiles.hpp"
#endif

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// out (n, ld) = a (n, d) * bt (d, ld): row r of out holds row r of a dotted
/// with each column of bt. ld a multiple of 16; out 64-byte aligned.
inline void row_dots(const reference&, const float* a, const float* bt, std::int64_t n, std::int64_t d,
                     std::int64_t ld, float* out) {
  for (std::int64_t r = 0; r < n; ++r) {
    float* o = out + r * ld;
    std::fill(o, o + ld, 0.0f);
    for (std::int64_t x = 0; x < d; ++x)
      for (std::int64_t c = 0; c < ld; ++c) o[c] += a[r * d + x] * bt[x * ld + c];
  }
}

inline executor executor_of(const reference&) { return executor::serial(); }

#if ATTNKIT_HAS_XSIMD
ATTNKIT_SIMD_BEGIN
template <class Arch>
void row_dots(const cpu<Arch>&, const float* a, const float* bt, std::int64_t n, std::int64_t d, std::int64_t ld,
              float* out) {
  simd::gemm_tile<Arch, false>(a, d, bt, ld, out, ld, n, ld, d);
}
ATTNKIT_SIMD_END

template <class Arch>
executor executor_of(const cpu<Arch>& backend) {
  return backend.exec;
}
#endif

}  // namespace detail
ATTNKIT_END_NAMESPACE
