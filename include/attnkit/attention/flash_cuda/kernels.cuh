// The cuda flash kernels: two schedules of one tile body (tile.cuh).
//   prefill: a block of 4 warps owns 64 query rows of one head (16 per warp)
//            and walks the key tiles its mask leaves non-empty, double
//            buffered with cp.async.
//   decode:  a block owns a GQA group's packed rows (group * sq <= 16) and one
//            split of the keys; its warps take a quarter of each key tile, are
//            merged in shared memory, and the splits are merged by lse in a
//            fixed order by flash_decode_merge_kernel (deterministic).
#pragma once

#include <cstdint>

#include "attnkit/attention/flash_cuda/problem.cuh"
#include "attnkit/attention/flash_cuda/tile.cuh"
#include "attnkit/attention/variant.hpp"
#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

inline constexpr int cuda_block_rows = 64;  // prefill query rows per block
inline constexpr int cuda_tile_keys = 64;   // keys per shared K/V tile
inline constexpr int cuda_threads = 128;    // 4 warps
inline constexpr int cuda_decode_rows = 16; // packed decode rows: one MMA tile
inline constexpr float cuda_log2e = 1.4426950408889634f;
inline constexpr float cuda_ln2 = 0.6931471805599453f;

__device__ ATTNKIT_INLINE std::int64_t imin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }
__device__ ATTNKIT_INLINE std::int64_t imax(std::int64_t a, std::int64_t b) { return a > b ? a : b; }

/// Shared memory of a kernel: the query tile and two stages of K and V tiles.
template <class T, int D>
constexpr int cuda_smem_bytes(int query_rows) {
  return (query_rows + 4 * cuda_tile_keys) * D * static_cast<int>(sizeof(T));
}

// sm_80's opt-in limit of dynamic shared memory per block (sm_90's is larger):
// the widest head dim compiled must fit on both archs.
inline constexpr int cuda_smem_limit = 166912;
static_assert(cuda_smem_bytes<half, 256>(cuda_block_rows) <= cuda_smem_limit, "prefill tiles exceed sm_80's limit");
static_assert(cuda_smem_bytes<half, 256>(cuda_decode_rows) <= cuda_smem_limit, "decode tiles exceed sm_80's limit");

/// How rows [i0, i1) meet keys [j0, j1): the band and the layout classify
/// exactly; a tile with a caller bitmask is never claimed full.
__device__ inline tile_state classify_tile(const attention_mask& m, std::int64_t i0, std::int64_t i1, std::int64_t j0,
                                           std::int64_t j1) {
  tile_state s = m.classify_band(i0, i1, j0, j1);
  if (s == tile_state::empty) return s;
  if (m.sparse.given()) {
    const tile_state ls = m.classify_sparse(i0, i1, j0, j1);
    if (ls == tile_state::empty) return ls;
    if (ls == tile_state::partial) s = ls;
  }
  return m.bits ? tile_state::partial : s;
}

/// The variant's hooks for a lane's two rows: raw q.k -> base-2 logit or -inf.
struct row_scorer {
  attention_mask mask;
  score_modifier score;
  bool modified = false;  // softcap or ALiBi
  bool partial = true;    // the visited tile needs per-element masking
  std::int64_t j0 = 0;    // the tile's first key
  std::int64_t i[2] = {}; // the rows' query row index in the sequence
  bool ok[2] = {};        // the row exists
  float slope[2] = {};

  __device__ float operator()(int t, int key, float raw) const {
    const std::int64_t j = j0 + key;
    if (partial && !(ok[t] && j < mask.span.skv && mask.visible(i[t], j))) return -INFINITY;
    if (!modified) return raw * (score.scale * cuda_log2e);
    const float dist = static_cast<float>(mask.key_position(j) - mask.position(i[t]));
    return score.modify(raw * score.scale, slope[t], dist) * cuda_log2e;
  }
};

/// Slot t's row of a finished warp state: the factor that normalizes its
/// accumulators and its natural-log lse, with `sink` (natural, -inf: none)
/// joining the denominator. A row that saw nothing gets factor 0, lse -inf.
template <int D>
__device__ ATTNKIT_INLINE void finish_row(const warp_rows<D>& st, int t, float sink, float& factor, float& lse) {
  const float l = cuda_verbs::quad_sum(st.l[t]);
  const float s2 = sink * cuda_log2e, m = st.m[t];
  const float top = fmaxf(m, s2), base = top == -INFINITY ? 0.0f : top;
  const float denom = l * exp2f(m - base) + exp2f(s2 - base);
  factor = denom > 0.0f ? exp2f(m - base) / denom : 0.0f;
  lse = denom > 0.0f ? (base + log2f(denom)) * cuda_ln2 : -INFINITY;
}

/// Which sequence and which 64-row tile of it block (blk, x) computes; false
/// when none. Ragged, packed sequence s owns tiles [cu(s)/64 + s, ...): the
/// starts grow with s and leave each sequence room for ceil(rows/64) tiles.
template <class T, class TO>
__device__ inline bool locate_row_tile(const cuda_problem<T, TO>& p, std::int64_t blk, std::int64_t x,
                                       std::int64_t& b, std::int64_t& tile) {
  if (!p.cu) {
    b = blk, tile = x;
    return x * cuda_block_rows < p.sq;
  }
  std::int64_t lo = 0, hi = p.inner - 1;
  while (lo < hi) {
    const std::int64_t mid = (lo + hi + 1) / 2;
    if (p.cu[mid] / cuda_block_rows + mid <= x)
      lo = mid;
    else
      hi = mid - 1;
  }
  b = blk * p.inner + lo;
  tile = x - (p.cu[lo] / cuda_block_rows + lo);
  return tile >= 0 && tile * cuda_block_rows < p.rows(b);
}

/// The key tiles [begin, end) rows [i0, i1) of mask m can reach.
__device__ inline void key_tile_range(const attention_mask& m, std::int64_t i0, std::int64_t i1, std::int64_t& begin,
                                      std::int64_t& end) {
  const attention_mask::row_keys top = m.band(i0), bottom = m.band(i1 - 1);
  begin = bottom.sink_end > 0 ? 0 : top.first / cuda_tile_keys;
  end = (bottom.last + cuda_tile_keys) / cuda_tile_keys;  // last may be -1: no keys
}

/// Walks key tiles [begin, end) that rows [i0, i1) see, double buffered: loads
/// the next tile while `visit(k_tile, v_tile, j0, state)` computes this one.
/// Every thread of the block calls it (it synchronizes the block).
template <class T, int D, class P, class Visit>
__device__ inline void walk_key_tiles(const P& p, const attention_mask& mask, std::int64_t b, std::int64_t kvh,
                                      std::int64_t i0, std::int64_t i1, std::int64_t begin, std::int64_t end,
                                      T* k_tiles, T* v_tiles, const Visit& visit) {
  const std::int64_t skv = mask.span.skv;
  const auto next_tile = [&](std::int64_t kt) {
    for (; kt < end; ++kt) {
      const std::int64_t j0 = kt * cuda_tile_keys, j1 = imin(skv, j0 + cuda_tile_keys);
      if (classify_tile(mask, i0, i1, j0, j1) != tile_state::empty) break;
    }
    return kt;
  };
  const auto load = [&](std::int64_t kt, int stage) {
    const std::int64_t j0 = kt * cuda_tile_keys;
    const int valid = static_cast<int>(imin(cuda_tile_keys, skv - j0));
    load_tile_async<T, D, cuda_threads>(
        k_tiles + stage * cuda_tile_keys * D, cuda_tile_keys, valid, static_cast<int>(p.d),
        [&](int r) { return p.k.row(b, kvh, j0 + r); }, p.q.data);
    load_tile_async<T, D, cuda_threads>(
        v_tiles + stage * cuda_tile_keys * D, cuda_tile_keys, valid, static_cast<int>(p.dv),
        [&](int r) { return p.v.row(b, kvh, j0 + r); }, p.q.data);
  };
  std::int64_t kt = next_tile(begin);
  if (kt < end) load(kt, 0);
  cuda_verbs::copy_commit();
  for (int stage = 0; kt < end; stage ^= 1) {
    const std::int64_t next = next_tile(kt + 1);
    if (next < end) load(next, stage ^ 1);
    cuda_verbs::copy_commit();
    cuda_verbs::copy_wait<1>();
    __syncthreads();
    const std::int64_t j0 = kt * cuda_tile_keys, j1 = imin(skv, j0 + cuda_tile_keys);
    const tile_state s = classify_tile(mask, i0, i1, j0, j1);
    visit(k_tiles + stage * cuda_tile_keys * D, v_tiles + stage * cuda_tile_keys * D, j0,
          s != tile_state::full || j0 + cuda_tile_keys > skv);
    __syncthreads();
    kt = next;
  }
  cuda_verbs::copy_wait<0>();
  __syncthreads();
}

template <class T, class TO, int D>
__global__ void __launch_bounds__(cuda_threads) flash_prefill_kernel(const cuda_problem<T, TO> p) {
  extern __shared__ uint4 smem[];
  T* q_tile = reinterpret_cast<T*>(smem);                 // (64, D)
  T* k_tiles = q_tile + cuda_block_rows * D;              // 2 x (64, D)
  T* v_tiles = k_tiles + 2 * cuda_tile_keys * D;          // 2 x (64, D)
  std::int64_t b, tile;
  if (!locate_row_tile(p, blockIdx.z, blockIdx.x, b, tile)) return;
  const std::int64_t h = blockIdx.y, kvh = h / (p.hq / p.hkv), qb = p.q_batch(b), r0 = p.row0(b);
  const std::int64_t i0 = tile * cuda_block_rows, i1 = imin(p.rows(b), i0 + cuda_block_rows);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  row_scorer sc;
  sc.mask = p.mask(b, h);
  sc.score = p.score;
  sc.modified = p.score.softcap > 0.0f || p.score.alibi_slopes;
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    sc.i[t] = i0 + warp * 16 + lane / 4 + 8 * t;
    sc.ok[t] = sc.i[t] < i1;
    sc.slope[t] = p.score.slope(h);
  }
  load_tile_async<T, D, cuda_threads>(
      q_tile, cuda_block_rows, static_cast<int>(i1 - i0), static_cast<int>(p.d),
      [&](int r) { return p.q.at(qb, h, r0 + i0 + r); }, p.q.data);

  warp_rows<D> st;
  st.clear();
  const int d_steps = static_cast<int>((p.d + 15) / 16), dv_steps = static_cast<int>((p.dv + 15) / 16);
  const bool rows_here = i0 + warp * 16 < i1;
  std::int64_t begin, end;
  key_tile_range(sc.mask, i0, i1, begin, end);
  walk_key_tiles<T, D>(p, sc.mask, b, kvh, i0, i1, begin, end, k_tiles, v_tiles,
                       [&](const T* k_tile, const T* v_tile, std::int64_t j0, bool partial) {
                         sc.j0 = j0;
                         sc.partial = partial;
                         // At D 256 a half tile per visit keeps the scores in registers.
                         constexpr int nk = D > 128 ? cuda_tile_keys / 2 : cuda_tile_keys;
                         if (rows_here)
                           for (int key0 = 0; key0 < cuda_tile_keys; key0 += nk)
                             visit_tile<T, D, nk>(st, q_tile, warp * 16, k_tile, v_tile, key0, d_steps, dv_steps, sc);
                       });

  const float sink = p.normalizer.sink(h);
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    float factor, lse;
    finish_row(st, t, sink, factor, lse);
    if (!sc.ok[t]) continue;
    TO* out = p.o.at(qb, h, r0 + sc.i[t]);
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int x = 0; x < 2; ++x) {
        const int c = 8 * j + 2 * (lane & 3) + x;
        if (c < p.dv) out[c] = static_cast<TO>(st.o[j][2 * t + x] * factor);
      }
    if (p.lse.data && (lane & 3) == 0) *p.lse.at(qb, h, r0 + sc.i[t]) = lse;
  }
}

/// Partial results of the decode splits: (count, hkv, splits, 16 rows) lse and (..., dv) outputs.
struct decode_partials {
  float* o = nullptr;
  float* lse = nullptr;
  std::int64_t splits = 1, chunk = 0;  // keys per split, a multiple of cuda_tile_keys
};

template <class T, class TO, int D>
__global__ void __launch_bounds__(cuda_threads) flash_decode_kernel(const cuda_problem<T, TO> p,
                                                                    const decode_partials part) {
  extern __shared__ uint4 smem[];
  T* q_tile = reinterpret_cast<T*>(smem);                 // (16, D): row r = query row r / group, head r % group
  T* k_tiles = q_tile + cuda_decode_rows * D;             // 2 x (64, D)
  T* v_tiles = k_tiles + 2 * cuda_tile_keys * D;          // 2 x (64, D)
  const std::int64_t split = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z;
  const std::int64_t group = p.hq / p.hkv, n = p.sq, packed = group * n;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  row_scorer sc;
  sc.mask = p.mask(b, kvh * group);  // every head of the group has this mask (the host checks)
  sc.score = p.score;
  sc.modified = p.score.softcap > 0.0f || p.score.alibi_slopes;
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    const int r = lane / 4 + 8 * t;
    sc.i[t] = r / group;
    sc.ok[t] = r < packed;
    sc.slope[t] = p.score.slope(kvh * group + r % group);
  }
  load_tile_async<T, D, cuda_threads>(
      q_tile, cuda_decode_rows, static_cast<int>(packed), static_cast<int>(p.d),
      [&](int r) { return p.q.at(b, kvh * group + r % group, r / group); }, p.q.data);

  warp_rows<D> st;
  st.clear();
  const int d_steps = static_cast<int>((p.d + 15) / 16), dv_steps = static_cast<int>((p.dv + 15) / 16);
  std::int64_t begin, end;
  key_tile_range(sc.mask, 0, n, begin, end);
  begin = imax(begin, split * part.chunk / cuda_tile_keys);
  end = imin(end, (split + 1) * part.chunk / cuda_tile_keys);
  walk_key_tiles<T, D>(p, sc.mask, b, kvh, 0, n, begin, end, k_tiles, v_tiles,
                       [&](const T* k_tile, const T* v_tile, std::int64_t j0, bool partial) {
                         sc.j0 = j0;
                         sc.partial = partial;
                         visit_tile<T, D, 16>(st, q_tile, 0, k_tile, v_tile, 16 * warp, d_steps, dv_steps, sc);
                       });

  // Merge the four warps' states through shared memory (the K/V stages are free now).
  float* red_o = reinterpret_cast<float*>(k_tiles);  // (4, 16, D)
  float* red_m = red_o + 4 * 16 * D;                 // (4, 16), log2 units
  float* red_l = red_m + 4 * 16;                     // (4, 16)
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    const int r = lane / 4 + 8 * t;
    const float l = cuda_verbs::quad_sum(st.l[t]);
    if ((lane & 3) == 0) red_m[warp * 16 + r] = st.m[t], red_l[warp * 16 + r] = l;
#pragma unroll
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int x = 0; x < 2; ++x) red_o[(warp * 16 + r) * D + 8 * j + 2 * (lane & 3) + x] = st.o[j][2 * t + x];
  }
  __syncthreads();
  const std::int64_t slot = ((b * p.hkv + kvh) * part.splits + split) * cuda_decode_rows;
  for (std::int64_t x = threadIdx.x; x < packed * p.dv; x += cuda_threads) {
    const int r = static_cast<int>(x / p.dv), c = static_cast<int>(x % p.dv);
    float top = -INFINITY;
    for (int w = 0; w < 4; ++w) top = fmaxf(top, red_m[w * 16 + r]);
    const float base = top == -INFINITY ? 0.0f : top;
    float l = 0.0f, acc = 0.0f;
    for (int w = 0; w < 4; ++w) {
      const float f = exp2f(red_m[w * 16 + r] - base);
      l += red_l[w * 16 + r] * f;
      acc += red_o[(w * 16 + r) * D + c] * f;
    }
    part.o[(slot + r) * p.dv + c] = l > 0.0f ? acc / l : 0.0f;
    if (c == 0) part.lse[slot + r] = l > 0.0f ? (base + log2f(l)) * cuda_ln2 : -INFINITY;
  }
}

/// Row (b, head kvh * group + r % group, query row r / group) of a decode call:
/// the splits' partials merged by lse in split order, the sink logit joining
/// the denominator once.
template <class T, class TO>
__global__ void __launch_bounds__(cuda_threads) flash_decode_merge_kernel(const cuda_problem<T, TO> p,
                                                                          const decode_partials part) {
  const std::int64_t r = blockIdx.x, kvh = blockIdx.y, b = blockIdx.z, group = p.hq / p.hkv;
  if (r >= group * p.sq) return;
  const std::int64_t h = kvh * group + r % group, i = r / group;
  const std::int64_t slot0 = (b * p.hkv + kvh) * part.splits * cuda_decode_rows + r;
  const float sink = p.normalizer.sink(h);
  float top = sink;
  for (std::int64_t s = 0; s < part.splits; ++s) top = fmaxf(top, part.lse[slot0 + s * cuda_decode_rows]);
  const float base = top == -INFINITY ? 0.0f : top;
  float denom = expf(sink - base);
  for (std::int64_t s = 0; s < part.splits; ++s) denom += expf(part.lse[slot0 + s * cuda_decode_rows] - base);
  TO* out = p.o.at(b, h, i);
  for (std::int64_t c = threadIdx.x; c < p.dv; c += cuda_threads) {
    float acc = 0.0f;
    for (std::int64_t s = 0; s < part.splits; ++s) {
      const std::int64_t slot = slot0 + s * cuda_decode_rows;
      acc += expf(part.lse[slot] - base) * part.o[slot * p.dv + c];
    }
    out[c] = static_cast<TO>(denom > 0.0f ? acc / denom : 0.0f);
  }
  if (p.lse.data && threadIdx.x == 0) *p.lse.at(b, h, i) = denom > 0.0f ? base + logf(denom) : -INFINITY;
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
