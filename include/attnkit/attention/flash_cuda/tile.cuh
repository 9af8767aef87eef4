// The cuda tile body: shared-memory tiles and what one warp computes on them.
// A warp owns 16 query rows (one MMA tile tall) and visits NK keys of a
// shared K/V tile: scores on tensor cores (Q Kᵀ), the variant's mask and score
// hooks per element, the online softmax step, and P V on tensor cores with P
// rounded to the input type (f16 or bf16; the fp32 accumulators keep the rest).
// Prefill gives each warp its own rows of a 64-row block and all 64 keys;
// decode gives each warp the same packed GQA rows and a quarter of the keys.
#pragma once

#include <cstdint>

#include "attnkit/backend/cuda/mma.cuh"
#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// Element offset of 16-byte chunk c of row r in a tile of rows of D elements.
/// Chunks are XOR-swizzled by row so that ldmatrix's eight row reads of one
/// column of chunks hit eight different bank groups.
template <int D>
__device__ ATTNKIT_INLINE int tile_offset(int r, int c) {
  return r * D + ((c ^ (r & 7)) << 3);
}

/// Copies rows [0, rows) of a tile into shared memory with all `threads`
/// threads of the block: `cols` valid elements per row (a multiple of 8), the
/// rest of D and rows past `valid_rows` zero-filled. row(r) gives row r's
/// global address and is only called for valid rows; zero-filled chunks name
/// `fallback`, a valid global address that is not read.
template <class T, int D, int Threads, class RowPtr>
__device__ ATTNKIT_INLINE void load_tile_async(T* tile, int rows, int valid_rows, int cols, const RowPtr& row,
                                               const T* fallback) {
  constexpr int chunks = D / 8;
  for (int x = threadIdx.x; x < rows * chunks; x += Threads) {
    const int r = x / chunks, c = x % chunks;
    const bool valid = r < valid_rows && c * 8 < cols;
    const T* src = valid ? row(r) + c * 8 : fallback;
    cuda_verbs::copy_16_async(cuda_verbs::smem_address(tile + tile_offset<D>(r, c)), src, valid);
  }
}

/// The online softmax state of a warp's 16 rows, in this lane's MMA fragments:
/// rows lane/4 (slot 0) and lane/4 + 8 (slot 1). m is in log2 units; l is this
/// lane's share of the row sum (quad_sum gives the row's).
template <int D>
struct warp_rows {
  float o[D / 8][4];
  float m[2], l[2];

  __device__ void clear() {
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int x = 0; x < 4; ++x) o[j][x] = 0.0f;
#pragma unroll
    for (int t = 0; t < 2; ++t) m[t] = -INFINITY, l[t] = 0.0f;
  }
};

/// s = the raw dot products of the warp's 16 rows of q_tile (row q_row0 on)
/// with keys [key0, key0 + NK) of k_tile, in MMA C fragments: s[n] holds key
/// columns 8n .. 8n + 7. d_steps: 16-column steps of d that hold data.
template <class T, int D, int NK>
__device__ ATTNKIT_INLINE void tile_scores(float (&s)[NK / 8][4], const T* q_tile, int q_row0, const T* k_tile,
                                           int key0, int d_steps) {
  using cuda_verbs::ldmatrix_x4;
  using cuda_verbs::smem_address;
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int n = 0; n < NK / 8; ++n)
#pragma unroll
    for (int x = 0; x < 4; ++x) s[n][x] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    if (ks >= d_steps) break;
    std::uint32_t a[4];
    ldmatrix_x4(a, smem_address(q_tile + tile_offset<D>(q_row0 + (lane & 15), 2 * ks + (lane >> 4))));
#pragma unroll
    for (int n2 = 0; n2 < NK / 16; ++n2) {
      std::uint32_t b[4];
      const int key = key0 + 16 * n2 + (lane & 7) + ((lane >> 4) << 3);
      ldmatrix_x4(b, smem_address(k_tile + tile_offset<D>(key, 2 * ks + ((lane >> 3) & 1))));
      cuda_verbs::mma_16816<T>(s[2 * n2], a, b[0], b[1]);
      cuda_verbs::mma_16816<T>(s[2 * n2 + 1], a, b[2], b[3]);
    }
  }
}

/// One visit: keys [key0, key0 + NK) of the shared tiles k_tile and v_tile
/// (64 rows each) against the warp's 16 rows of q_tile (row q_row0 on).
/// `log2_score(t, key, raw)` turns the raw dot product of slot t's row and tile
/// key `key` into a base-2 logit, or -inf where the mask hides the key.
/// d_steps and dv_steps: 16-column steps of d and dv that hold data.
template <class T, int D, int NK, class Score>
__device__ ATTNKIT_INLINE void visit_tile(warp_rows<D>& st, const T* q_tile, int q_row0, const T* k_tile,
                                          const T* v_tile, int key0, int d_steps, int dv_steps,
                                          const Score& log2_score) {
  const int lane = threadIdx.x & 31;
  float s[NK / 8][4];
  tile_scores<T, D, NK>(s, q_tile, q_row0, k_tile, key0, d_steps);

  // Scores, then the online softmax step, per row slot.
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    float row_max = -INFINITY;
#pragma unroll
    for (int n = 0; n < NK / 8; ++n)
#pragma unroll
      for (int x = 0; x < 2; ++x) {
        const int key = key0 + 8 * n + 2 * (lane & 3) + x;
        s[n][2 * t + x] = log2_score(t, key, s[n][2 * t + x]);
        row_max = fmaxf(row_max, s[n][2 * t + x]);
      }
    const float m_new = fmaxf(st.m[t], cuda_verbs::quad_max(row_max));
    // With every key so far hidden, m_new is -inf: keep the (zero) state.
    const float base = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = exp2f(st.m[t] - base);
    float sum = 0.0f;
#pragma unroll
    for (int n = 0; n < NK / 8; ++n)
#pragma unroll
      for (int x = 0; x < 2; ++x) {
        s[n][2 * t + x] = exp2f(s[n][2 * t + x] - base);
        sum += s[n][2 * t + x];
      }
    st.l[t] = st.l[t] * alpha + sum;
    st.m[t] = m_new;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) st.o[j][2 * t] *= alpha, st.o[j][2 * t + 1] *= alpha;
  }

  // O += P V: the score accumulators of two key columns of 8 are the A
  // fragment of one 16-key step.
#pragma unroll
  for (int kk = 0; kk < NK / 16; ++kk) {
    using pack = cuda_verbs::mma_type<T>;
    const std::uint32_t a[4] = {pack::pack(s[2 * kk][0], s[2 * kk][1]), pack::pack(s[2 * kk][2], s[2 * kk][3]),
                                pack::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                pack::pack(s[2 * kk + 1][2], s[2 * kk + 1][3])};
    const int key = key0 + 16 * kk + (lane & 15);
#pragma unroll
    for (int j = 0; j < D / 16; ++j) {
      if (j >= dv_steps) break;
      std::uint32_t b[4];
      cuda_verbs::ldmatrix_x4_trans(b, cuda_verbs::smem_address(v_tile + tile_offset<D>(key, 2 * j + (lane >> 4))));
      cuda_verbs::mma_16816<T>(st.o[2 * j], a, b[0], b[1]);
      cuda_verbs::mma_16816<T>(st.o[2 * j + 1], a, b[2], b[3]);
    }
  }
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
