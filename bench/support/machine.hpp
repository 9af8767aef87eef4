// Short probes of this machine's limits, so benchmark rows can say what fraction
// of the hardware they use: fp32 FMA throughput, bf16 pair-dot throughput
// (vdpbf16ps, where the CPU and the build have it), and read bandwidth from DRAM
// and from L2 (what a kernel whose working set stays in L2, like linear decode, gets).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include <xsimd/xsimd.hpp>

#include "attnkit/backend/cpu/bf16_dot.hpp"
#include "attnkit/backend/cpu/cpu_features.hpp"
#include "attnkit/core/tensor.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace attnkit::bench {

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Runs body(thread_index) on `threads` threads at once.
template <class Body>
void on_threads(int threads, Body&& body) {
#if defined(_OPENMP)
#pragma omp parallel num_threads(threads)
  body(omp_get_thread_num());
#else
  for (int t = 0; t < threads; ++t) body(t);
#endif
}

inline int max_threads() {
#if defined(_OPENMP)
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// The best of three runs of body(thread_index) on `threads` threads, in
/// GFLOP/s for `flops` per run.
template <class Body>
double best_gflops(int threads, double flops, Body&& body) {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    on_threads(threads, body);
    best = std::max(best, flops / seconds_since(t0) / 1e9);
  }
  return best;
}

/// fp32 FMA throughput in GFLOP/s on `threads` threads: independent FMA chains in
/// registers, wide enough to cover the FMA latency on every port.
inline double measure_fma_gflops(int threads) {
  using batch = xsimd::batch<float>;
  constexpr int chains = 16;
  constexpr std::int64_t iters = 1 << 23;
  std::vector<float> sink(static_cast<std::size_t>(threads));
  const double best =
      best_gflops(threads, 2.0 * chains * batch::size * static_cast<double>(iters) * threads, [&](int t) {
        batch acc[chains];
        for (int c = 0; c < chains; ++c) acc[c] = batch(1.0f + 0.001f * static_cast<float>(c + t));
        const batch a(0.9999999f), b(1e-7f);
        for (std::int64_t i = 0; i < iters; ++i)
          for (int c = 0; c < chains; ++c) acc[c] = xsimd::fma(acc[c], a, b);
        batch total(0.0f);
        for (int c = 0; c < chains; ++c) total += acc[c];
        sink[static_cast<std::size_t>(t)] = xsimd::hadd(total);  // keeps the loop alive
      });
  return sink[0] == 0.0f ? best * 2 : best;  // never true: the sum is ~16 * threads
}

ATTNKIT_SIMD_BEGIN  // GCC 12 flags the AVX-512 reductions' don't-care operands (xsimd_compat.hpp)
/// bf16 pair-dot throughput in GFLOP/s on `threads` threads (vdpbf16ps: 16
/// lanes x 2 products x 2 FLOPs each), chains as in measure_fma_gflops; 0 when
/// the build lacks -mavx512bf16 or the CPU lacks AVX512_BF16.
inline double measure_bf16_dot_gflops(int threads) {
#if ATTNKIT_HAS_BF16_DOT
  if (!detect_cpu_features().has_avx512bf16_kernels()) return 0;
  constexpr int chains = 16;
  constexpr std::int64_t iters = 1 << 23;
  std::vector<float> sink(static_cast<std::size_t>(threads));
  const double best = best_gflops(threads, 4.0 * chains * 16 * static_cast<double>(iters) * threads, [&](int t) {
    __m512 acc[chains];
    for (int c = 0; c < chains; ++c) acc[c] = _mm512_set1_ps(static_cast<float>(c + t));
    const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33d633d6);  // 1, 1e-7
    for (std::int64_t i = 0; i < iters; ++i)
      for (int c = 0; c < chains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
    __m512 total = _mm512_setzero_ps();
    for (int c = 0; c < chains; ++c) total = _mm512_add_ps(total, acc[c]);
    sink[static_cast<std::size_t>(t)] = _mm512_reduce_add_ps(total);  // keeps the loop alive
  });
  return sink[0] < 0.0f ? best * 2 : best;  // never true: every chain starts at >= 0 and adds > 0
#else
  (void)threads;
  return 0;
#endif
}
ATTNKIT_SIMD_END

/// Read bandwidth in GB/s on `threads` threads, each summing its share of `bytes`
/// `passes` times: DRAM for a buffer far larger than the caches (the default).
inline double measure_read_gbps(int threads, std::int64_t bytes = std::int64_t(512) << 20, int passes = 1) {
  using batch = xsimd::batch<float>;
  const std::int64_t n = bytes / static_cast<std::int64_t>(sizeof(float));
  tensor<float, 1> buffer({n});
  const std::int64_t per_thread = n / threads / (4 * batch::size) * (4 * batch::size);
  on_threads(threads, [&](int t) {  // first touch on the reading thread
    std::fill_n(buffer.data() + t * per_thread, per_thread, 1.0f);
  });
  std::vector<float> sink(static_cast<std::size_t>(threads));
  double best = 0;
  for (int rep = 0; rep < 4; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    on_threads(threads, [&](int t) {
      const float* p = buffer.data() + t * per_thread;
      batch s0(0.0f), s1(0.0f), s2(0.0f), s3(0.0f);
      for (int pass = 0; pass < passes; ++pass)
        for (std::int64_t i = 0; i < per_thread; i += 4 * batch::size) {
          s0 += batch::load_aligned(p + i);
          s1 += batch::load_aligned(p + i + batch::size);
          s2 += batch::load_aligned(p + i + 2 * batch::size);
          s3 += batch::load_aligned(p + i + 3 * batch::size);
        }
      sink[static_cast<std::size_t>(t)] = xsimd::hadd(s0 + s1 + s2 + s3);
    });
    const double read = static_cast<double>(per_thread) * threads * sizeof(float) * passes;
    best = std::max(best, read / seconds_since(t0) / 1e9);
  }
  return sink[0] < 0.0f ? best * 2 : best;  // never true: the buffer holds ones
}

/// The limits a benchmark row on `threads` threads is compared with.
struct machine_limits {
  int threads = 1;
  double fma_gflops = 0;
  double bf16_dot_gflops = 0;  // 0: no bf16 pair dot in this build or on this CPU
  double read_gbps = 0;
  double l2_read_gbps = 0;
};

inline machine_limits measure_machine(int threads) {
  // L2: 512 KiB per thread (a quarter of a 2 MiB L2, half of a 1 MiB one), read 400 times.
  return {threads, measure_fma_gflops(threads), measure_bf16_dot_gflops(threads), measure_read_gbps(threads),
          measure_read_gbps(threads, std::int64_t(threads) << 19, 400)};
}

}  // namespace attnkit::bench
