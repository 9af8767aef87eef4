// The boundary between the dispatch benchmark's baseline code and its direct
// AVX-512 call: plain pointers and sizes, no attnkit type.
#pragma once

#include <cstddef>
#include <cstdint>

namespace attnkit_bench_dispatch {

/// One decode step, f32 q and o (1, hq, 1, d), f16 K and V (1, hkv, skv, d), contiguous.
struct decode_buffers {
  const float* q;
  const void* k;
  const void* v;
  float* o;
  std::int64_t hq, hkv, skv, d;
  void* scratch;
  std::size_t scratch_bytes;
};

/// flash_attention on cpu<xsimd::avx512bw>, compiled with the AVX-512 dispatch unit's flags.
void direct_decode(const decode_buffers& b);
std::size_t direct_decode_workspace(const decode_buffers& b);

}  // namespace attnkit_bench_dispatch
