// Key weights on the cuda backend: how much attention each key received, the
// signal of score-based eviction (key_weights.hpp has the definition):
//   out(b, w, j) = sum over heads h of w, rows i:  row_weight(i) * exp(s(h, i, j) - lse(h, i))
// A second pass after the attention call, with its lse, one 64-key tile per
// block (the CPU's prefill does the same): the block keeps its K tile in
// shared memory, scores the rows of w's heads 64 at a time with the tile body's
// tile_scores, and sums each key's column over warps in a fixed order, so the
// result does not depend on scheduling. No sq x skv buffer exists.
#pragma once

#include <cstdint>

#include "attnkit/attention/flash_cuda/kernels.cuh"
#include "attnkit/attention/flash_cuda/problem.cuh"
#include "attnkit/attention/flash_cuda/tile.cuh"
#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// key_weights (key_weights_arg.hpp) as the device reads it.
struct cuda_key_weights {
  float* out = nullptr;  // (count, heads, keys); keys of a sequence past its length get 0
  std::int64_t stride[2] = {};  // sequence, head (keys are contiguous)
  std::int64_t heads = 0, keys = 0;
  const float* row_weights = nullptr;  // (sq), or the packed rows when ragged; null: all 1
  std::int64_t row_stride = 1;
};

template <class T, int D>
constexpr int cuda_key_weights_smem_bytes() {
  return 2 * cuda_tile_keys * D * static_cast<int>(sizeof(T)) + 4 * cuda_tile_keys * static_cast<int>(sizeof(float));
}

static_assert(cuda_key_weights_smem_bytes<half, 256>() <= cuda_smem_limit, "key-weights tiles exceed sm_80's limit");

template <class T, class TO, int D>
__global__ void __launch_bounds__(cuda_threads) flash_key_weights_kernel(const cuda_problem<T, TO> p,
                                                                         const cuda_key_weights kw) {
  extern __shared__ uint4 smem[];
  T* k_tile = reinterpret_cast<T*>(smem);                            // (64, D)
  T* q_tile = k_tile + cuda_tile_keys * D;                           // (64, D)
  float* sums = reinterpret_cast<float*>(q_tile + cuda_tile_keys * D);  // (4 warps, 64 keys)
  const std::int64_t j0 = blockIdx.x * std::int64_t{cuda_tile_keys}, w = blockIdx.y, b = blockIdx.z;
  const std::int64_t group = p.hq / p.hkv, len = p.k.length(b), n = p.rows(b);
  const std::int64_t qb = p.q_batch(b), r0 = p.row0(b);
  const std::int64_t h0 = kw.heads == p.hq ? w : w * group, heads = kw.heads == p.hq ? 1 : group;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int d_steps = static_cast<int>((p.d + 15) / 16);
  float acc = 0.0f;  // thread x < 64: key j0 + x

  if (j0 < len) {
    load_tile_async<T, D, cuda_threads>(
        k_tile, cuda_tile_keys, static_cast<int>(imin(cuda_tile_keys, len - j0)), static_cast<int>(p.d),
        [&](int r) { return p.k.row(b, h0 / group, j0 + r); }, p.q.data);
    for (std::int64_t h = h0; h < h0 + heads; ++h) {
      row_scorer sc;
      sc.mask = p.mask(b, h);
      sc.score = p.score;
      sc.modified = p.score.softcap > 0.0f || p.score.alibi_slopes;
      sc.j0 = j0;
      sc.partial = true;  // every element is checked: rows past the sequence must add nothing
      for (std::int64_t i0 = 0; i0 < n; i0 += cuda_block_rows) {
        const std::int64_t i1 = imin(n, i0 + cuda_block_rows);
        if (classify_tile(sc.mask, i0, i1, j0, imin(len, j0 + cuda_tile_keys)) == tile_state::empty) continue;
        load_tile_async<T, D, cuda_threads>(
            q_tile, cuda_block_rows, static_cast<int>(i1 - i0), static_cast<int>(p.d),
            [&](int r) { return p.q.at(qb, h, r0 + i0 + r); }, p.q.data);
        cuda_verbs::copy_commit();
        cuda_verbs::copy_wait<0>();
        __syncthreads();
        float col[cuda_tile_keys / 8][2] = {};
        if (i0 + warp * 16 < i1) {
          float s[cuda_tile_keys / 8][4];
          tile_scores<T, D, cuda_tile_keys>(s, q_tile, warp * 16, k_tile, 0, d_steps);
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            const std::int64_t i = i0 + warp * 16 + lane / 4 + 8 * t;
            sc.i[t] = i;
            sc.ok[t] = i < i1;
            sc.slope[t] = p.score.slope(h);
            const float lse = sc.ok[t] ? *p.lse.at(qb, h, r0 + i) * cuda_log2e : -INFINITY;
            const float rw = !sc.ok[t] ? 0.0f
                             : kw.row_weights ? kw.row_weights[((p.cu ? p.cu[b % p.inner] : 0) + i) * kw.row_stride]
                                              : 1.0f;
#pragma unroll
            for (int c = 0; c < cuda_tile_keys / 8; ++c)
#pragma unroll
              for (int x = 0; x < 2; ++x) {
                const float logit = sc(t, 8 * c + 2 * (lane & 3) + x, s[c][2 * t + x]);
                if (lse != -INFINITY && logit != -INFINITY) col[c][x] += rw * exp2f(logit - lse);
              }
          }
        }
        // Column sums over the warp's rows: the 8 lanes that share lane % 4.
#pragma unroll
        for (int c = 0; c < cuda_tile_keys / 8; ++c)
#pragma unroll
          for (int x = 0; x < 2; ++x) {
            float v = col[c][x];
            v += __shfl_xor_sync(0xffffffffu, v, 4);
            v += __shfl_xor_sync(0xffffffffu, v, 8);
            v += __shfl_xor_sync(0xffffffffu, v, 16);
            if (lane < 4) sums[warp * cuda_tile_keys + 8 * c + 2 * lane + x] = v;
          }
        __syncthreads();
        if (threadIdx.x < cuda_tile_keys)
          for (int wp = 0; wp < 4; ++wp) acc += sums[wp * cuda_tile_keys + threadIdx.x];
        __syncthreads();
      }
    }
    cuda_verbs::copy_commit();
    cuda_verbs::copy_wait<0>();
  }
  const std::int64_t j = j0 + threadIdx.x;
  if (threadIdx.x < cuda_tile_keys && j < kw.keys) kw.out[b * kw.stride[0] + w * kw.stride[1] + j] = j < len ? acc : 0.0f;
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
