// Software prefetch of a row that a kernel will stage soon: issued one chunk
// ahead, the DRAM reads overlap the current chunk's arithmetic instead of
// stalling the next chunk's copies. A no-op where the compiler has no builtin.
#pragma once

#include <cstdint>

#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace simd {

/// Asks for the cache lines of row[0, n) to be brought towards L2.
template <class T>
inline void prefetch_row(const T* row, std::int64_t n) {
#if defined(__GNUC__)
  const char* bytes = reinterpret_cast<const char*>(row);
  const std::int64_t size = n * static_cast<std::int64_t>(sizeof(T));
  for (std::int64_t i = 0; i < size; i += 64) __builtin_prefetch(bytes + i, 0, 2);
#else
  (void)row;
  (void)n;
#endif
}

}  // namespace simd
ATTNKIT_END_NAMESPACE
