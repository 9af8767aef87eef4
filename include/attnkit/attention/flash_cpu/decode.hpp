// The decode path of cpu flash: the query rows of a GQA group go together, the
// keys each (sequence, KV head) can see split into chunks that run in parallel
// (how many depends on the sequence's length and the thread count only), and a
// final pass merges the chunks' partial states in chunk order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "attnkit/attention/flash_cpu/key_weights.hpp"
#include "attnkit/attention/flash_cpu/plan.hpp"
#include "attnkit/attention/schedule.hpp"
#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/backend/cpu/prefetch.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// The state of key tile [j0, j1) over the rows of every head of a group: empty
/// only if empty for all, full only if full for all.
inline tile_state group_state(const attention_variant* vars, std::int64_t heads, std::int64_t sq, std::int64_t j0,
                              std::int64_t j1) {
  bool any = false, all = true;
  for (std::int64_t x = 0; x < heads; ++x) {
    const tile_state t = vars[x].mask.classify(0, sq, j0, j1);
    any = any || t != tile_state::empty;
    all = all && t == tile_state::full;
  }
  return !any ? tile_state::empty : (all ? tile_state::full : tile_state::partial);
}

/// Where the walk resumes after an empty tile ending at j1: there, or under a
/// layout at the next key (before jb) some head's layout may select.
inline std::int64_t resume_after_empty(const attention_variant* vars, std::int64_t heads, std::int64_t sq,
                                       std::int64_t j1, std::int64_t jb) {
  if (!vars[0].mask.sparse.given()) return j1;
  std::int64_t next = jb;
  for (std::int64_t x = 0; x < heads; ++x) next = std::min(next, vars[x].mask.next_selected(0, sq, j1));
  return std::max(j1, next);
}

/// One tile of decode with a single query row (no GQA, one decode step): keys
/// and values are widened straight from memory into the dot products and the
/// accumulator instead of being staged as fp32 tiles first, and a quantized
/// row's scale multiplies its score (keys) and its weight (values) once, not
/// each of its elements. Needs d and dv to be multiples of the lanes.
template <class Arch, class KS, class VS>
void decode_tile_direct(const KS& k, const VS& v, std::int64_t b, std::int64_t hk, std::int64_t j0, std::int64_t cols,
                        std::int64_t jb, std::int64_t d, std::int64_t dv, const float* q, float* sr, float* acc,
                        softmax_state& st, const attention_variant& var, float slope, std::int64_t i, bool partial,
                        float* kept) {
  using B = simd::fbatch<Arch>;
  constexpr int L = simd::lanes<Arch>, NV = 4;
  constexpr std::int64_t prefetch_distance = 16 * L;
  const typename KS::element* kr[L];
  const typename VS::element* vr[L];
  alignas(64) float ks[L], vs[L];
  k.scale_run(b, hk, j0, cols, ks);
  v.scale_run(b, hk, j0, cols, vs);
  std::fill(ks + cols, ks + L, 1.0f);
  std::fill(vs + cols, vs + L, 1.0f);
  for (int c = 0; c < L; ++c) {
    const std::int64_t j = j0 + std::min<std::int64_t>(c, cols - 1);  // lanes past cols reread the last key
    kr[c] = k.row(b, hk, j);
    vr[c] = v.row(b, hk, j);
    if (j0 + c + prefetch_distance < jb) {
      simd::prefetch_row(k.row(b, hk, j0 + c + prefetch_distance), d);
      simd::prefetch_row(v.row(b, hk, j0 + c + prefetch_distance), dv);
    }
  }
  B dot[L];
  for (int c = 0; c < L; ++c) dot[c] = B(0.0f);
  for (std::int64_t y = 0; y < d; y += L) {
    const B qv = B::load_aligned(q + y);
    for (int c = 0; c < L; ++c) dot[c] = xsimd::fma(qv, simd::load_widen<Arch>(kr[c] + y), dot[c]);
  }
  (simd::transpose_sum<Arch>(dot) * B::load_aligned(ks)).store_aligned(sr);
  finish_scores<Arch>(sr, L, cols, var, slope, i, j0, partial);
  if (kept) std::copy(sr, sr + cols, kept + j0);
  const float alpha = simd::softmax_step<Arch>(sr, L, st);
  if (alpha != 1.0f) simd::scale_row<Arch>(acc, dv, alpha);
  (B::load_aligned(sr) * B::load_aligned(vs)).store_aligned(sr);  // weights times the values' scales
  // acc += sum over keys of weight * v, NV registers of acc at a time; a zero
  // weight (a masked key) adds nothing, whatever its value holds.
  for (std::int64_t y0 = 0; y0 < dv; y0 += NV * L) {
    const int nv = static_cast<int>(std::min<std::int64_t>(NV, (dv - y0) / L));
    B a[NV];
    for (int x = 0; x < nv; ++x) a[x] = B::load_aligned(acc + y0 + x * L);
    for (std::int64_t c = 0; c < cols; ++c) {
      if (sr[c] == 0.0f) continue;
      const B w(sr[c]);
      if (nv == NV) {
        for (int x = 0; x < NV; ++x) a[x] = xsimd::fma(w, simd::load_widen<Arch>(vr[c] + y0 + x * L), a[x]);
      } else {
        for (int x = 0; x < nv; ++x) a[x] = xsimd::fma(w, simd::load_widen<Arch>(vr[c] + y0 + x * L), a[x]);
      }
    }
    for (int x = 0; x < nv; ++x) a[x].store_aligned(acc + y0 + x * L);
  }
}

/// sc (rows, L), rows ld apart = qb (rows, dp) * kb (L, dp)ᵀ: two rows at a time
/// over half the keys, so each key vector loaded feeds two FMAs (one row per
/// load left the loop bound by loads, not FMAs).
template <class Arch>
void group_scores(const float* qb, std::int64_t rows, std::int64_t dp, const float* kb, float* sc, std::int64_t ld) {
  using B = simd::fbatch<Arch>;
  constexpr int L = simd::lanes<Arch>, H = L / 2;
  alignas(64) float sums[L];
  for (std::int64_t r = 0; r < rows; r += 2) {
    const bool pair = r + 1 < rows;
    const float* q0 = qb + r * dp;
    const float* q1 = pair ? q0 + dp : q0;
    for (int half = 0; half < 2; ++half) {
      const float* k0 = kb + half * H * dp;
      B dot[L];  // dot[c]: row r with key half * H + c; dot[H + c]: row r + 1
      for (int c = 0; c < L; ++c) dot[c] = B(0.0f);
      for (std::int64_t y = 0; y < dp; y += L) {
        const B a = B::load_aligned(q0 + y), b = B::load_aligned(q1 + y);
        for (int c = 0; c < H; ++c) {
          const B kc = B::load_aligned(k0 + c * dp + y);
          dot[c] = xsimd::fma(a, kc, dot[c]);
          dot[H + c] = xsimd::fma(b, kc, dot[H + c]);
        }
      }
      simd::transpose_sum<Arch>(dot).store_aligned(sums);
      std::copy(sums, sums + H, sc + r * ld + half * H);
      if (pair) std::copy(sums + H, sums + L, sc + (r + 1) * ld + half * H);
    }
  }
}

/// The most rows one register block of the in-place group kernels holds: R rows
/// times L / R keys of score sums, or R rows times up to 4 vectors of acc (16
/// registers on AVX-512, 8 on AVX2), leave room for the operands in the
/// register file (AVX2 has half of AVX-512's).
template <class Arch>
inline constexpr int group_block_rows = simd::lanes<Arch> >= 16 ? 8 : 4;

/// f(r0, integral_constant<int, R>) over blocks of R = group_block_rows rows, then
/// the remainder in power-of-two blocks (each size at most once).
template <class Arch, class F>
ATTNKIT_INLINE void for_group_blocks(std::int64_t rows, F&& f) {
  constexpr int RMAX = group_block_rows<Arch>;
  std::int64_t r = 0;
  for (; r + RMAX <= rows; r += RMAX) f(r, std::integral_constant<int, RMAX>{});
  const auto rest = [&](auto self, auto rr) {
    constexpr int R = decltype(rr)::value;
    if (rows - r >= R) {
      f(r, rr);
      r += R;
    }
    if constexpr (R > 1) self(self, std::integral_constant<int, R / 2>{});
  };
  rest(rest, std::integral_constant<int, RMAX / 2>{});
}

/// sc (R, n), rows ld apart = qb (R, dp) * K[n keys]ᵀ with the keys read where
/// they lie (kr: n row pointers, n a multiple of L / R) and widened in registers,
/// never staged in fp32. A block holds R rows times C = L / R keys of sums, so
/// each key vector is widened once for all R rows; transpose_sum leaves row r's
/// key c in lane r * C + c.
template <class Arch, int R, class T>
ATTNKIT_INLINE void group_scores_block(const float* qb, std::int64_t dp, std::int64_t d, const T* const* kr,
                                       std::int64_t n, float* sc, std::int64_t ld) {
  using B = simd::fbatch<Arch>;
  constexpr int L = simd::lanes<Arch>, C = L / R;
  alignas(64) float sums[L];
  for (std::int64_t c0 = 0; c0 < n; c0 += C) {
    B dot[L];  // dot[r * C + c]: row r with key c0 + c
    for (int x = 0; x < L; ++x) dot[x] = B(0.0f);
    for (std::int64_t y = 0; y < d; y += L) {
      B qr[R];
      for (int r = 0; r < R; ++r) qr[r] = B::load_aligned(qb + r * dp + y);
      for (int c = 0; c < C; ++c) {
        const B kc = simd::load_widen<Arch>(kr[c0 + c] + y);
        for (int r = 0; r < R; ++r) dot[r * C + c] = xsimd::fma(qr[r], kc, dot[r * C + c]);
      }
    }
    simd::transpose_sum<Arch>(dot).store_aligned(sums);
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) sc[r * ld + c0 + c] = sums[r * C + c];
  }
}

/// acc (R, dvp) columns [y0, y0 + NV * L) += w (R, n), rows ld apart, * V[n keys]
/// read where they lie (vr: n row pointers), each value vector widened once for
/// the R rows.
template <class Arch, int R, int NV, class T>
ATTNKIT_INLINE void group_pv_block(const float* w, std::int64_t ld, const T* const* vr, std::int64_t n, std::int64_t y0,
                                   float* acc, std::int64_t dvp) {
  using B = simd::fbatch<Arch>;
  constexpr int L = simd::lanes<Arch>;
  B a[R][NV];
  for (int r = 0; r < R; ++r)
    for (int x = 0; x < NV; ++x) a[r][x] = B::load_aligned(acc + r * dvp + y0 + x * L);
  for (std::int64_t c = 0; c < n; ++c) {
    B vc[NV];
    for (int x = 0; x < NV; ++x) vc[x] = simd::load_widen<Arch>(vr[c] + y0 + x * L);
    for (int r = 0; r < R; ++r) {
      const B wr(w[r * ld + c]);
      for (int x = 0; x < NV; ++x) a[r][x] = xsimd::fma(wr, vc[x], a[r][x]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int x = 0; x < NV; ++x) a[r][x].store_aligned(acc + r * dvp + y0 + x * L);
}

/// s (rows, n), rows ld apart, times the column factors f[0, n); n a multiple of the lanes.
template <class Arch>
void scale_columns(float* s, std::int64_t rows, std::int64_t ld, const float* f, std::int64_t n) {
  using B = simd::fbatch<Arch>;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < n; c += simd::lanes<Arch>)
      (B::load_aligned(s + r * ld + c) * B::load_aligned(f + c)).store_aligned(s + r * ld + c);
}

/// A full decode tile of n keys (a multiple of L) for a group's rows, read in
/// place: scores into sc (rows, n) and, once the softmax has made them weights,
/// acc (rows, dvp) += weights * V. Needs d and dv to be multiples of the lanes.
template <class Arch, class T>
void group_scores_direct(const float* qb, std::int64_t rows, std::int64_t dp, std::int64_t d, const T* const* kr,
                         std::int64_t n, float* sc, std::int64_t ld) {
  for_group_blocks<Arch>(rows, [&](std::int64_t r0, auto rr) {
    group_scores_block<Arch, decltype(rr)::value>(qb + r0 * dp, dp, d, kr, n, sc + r0 * ld, ld);
  });
}
template <class Arch, class T>
void group_pv_direct(const float* w, std::int64_t ld, std::int64_t rows, const T* const* vr, std::int64_t n,
                     std::int64_t dv, float* acc, std::int64_t dvp) {
  constexpr int L = simd::lanes<Arch>, regs = L >= 16 ? 16 : 8;  // accumulator registers per block
  for_group_blocks<Arch>(rows, [&](std::int64_t r0, auto rr) {
    constexpr int R = decltype(rr)::value, NV = regs / R < 4 ? regs / R : 4;
    std::int64_t y = 0;
    for (; y + NV * L <= dv; y += NV * L) group_pv_block<Arch, R, NV>(w + r0 * ld, ld, vr, n, y, acc + r0 * dvp, dvp);
    for (; y < dv; y += L) group_pv_block<Arch, R, 1>(w + r0 * ld, ld, vr, n, y, acc + r0 * dvp, dvp);
  });
}

/// One decode chunk: rows = group * sq query rows of sequence b, KV head hk, over
/// keys [a, e) of the concatenated key ranges the rows can see.
template <class Arch, class TQ, class TO, class KS, class VS>
void decode_chunk(const flash_cpu_plan<Arch>& plan, const flash_io<TQ, TO>& io, const KS& k, const VS& v,
                  std::int64_t b, std::int64_t hk, const key_ranges& keys, std::int64_t a, std::int64_t e,
                  float* part, float* kept_rows, float* slot) {
  constexpr int L = simd::lanes<Arch>;
  constexpr std::int64_t KT = simd::flash_tiling<Arch>::kv_tile;  // the row stride pv_tile expects
  constexpr std::int64_t prefetch_distance = 4 * L;               // keys ahead
  const attention_shape& s = plan.s;
  const std::int64_t d = s.d, dv = s.dv, dp = plan.dp, dvp = plan.dvp, sq = io.batch.rows(b), len = k.length(b);
  const std::int64_t rows = plan.group * sq, heads = io.batch.heads_differ(plan.group) ? plan.group : 1;
  attention_variant vars[flash_cpu_plan<Arch>::max_decode_rows];  // per head of the group (or one for all)
  for (std::int64_t x = 0; x < heads; ++x) vars[x] = io.variant(b, len, d, hk * plan.group + x);
  float* qb = slot;              // (rows, dp), row r = (head hk * group + r / sq, query r % sq)
  float* kb = qb + rows * dp;    // (L, dp)
  float* vb = kb + L * dp;       // (L, dvp)
  float* sc = vb + L * dvp;      // (rows, KT): the first L (or n in place) of each row used
  float* acc = part;             // (rows, dvp)
  float* m = part + plan.rows * dvp;  // (rows)
  float* l = m + plan.rows;           // (rows)
  for (std::int64_t r = 0; r < rows; ++r)
    simd::widen_row<Arch>(io.q_row(b, hk * plan.group + r / sq, r % sq), d, qb + r * dp, dp, vars[0].score.scale);
  std::fill(acc, acc + rows * dvp, 0.0f);
  const softmax_state init;
  std::fill(m, m + rows, init.m);
  std::fill(l, l + rows, init.l);

  // Direct for one-byte K/V only (other one-row tiles go in place below);
  // other types never compile it.
  constexpr bool one_byte = sizeof(typename KS::element) == 1 && sizeof(typename VS::element) == 1;
  const bool direct = one_byte && rows == 1 && d % L == 0 && dv % L == 0;
  // A group's full tiles are read in place, up to KT keys at a time (8 or more
  // rows; measured: fewer rows, more bound by memory, do best with L). One f16
  // row too: against staging it ran 1.9x faster from L3 and, from DRAM, faster
  // in most processes of an interleaved run (a process whose pages make even a
  // plain stream slow can lose a few percent).
  constexpr bool quantized = is_quantized_v<std::remove_const_t<typename KS::element>> ||
                             is_quantized_v<std::remove_const_t<typename VS::element>>;
  const bool in_place = !direct && d % L == 0 && dv % L == 0;
  const std::int64_t in_place_keys = rows >= 8 ? KT : L;
  const typename KS::element* kr[KT];
  const typename VS::element* vr[KT];
  alignas(64) float scales[KT];  // a tile's dequantization scales
  // Raw scores of keys [j0, j0 + n) (n a multiple of L, cols of them real) into
  // each row's softmax state; sc becomes the weights.
  const auto fold_rows = [&](std::int64_t j0, std::int64_t n, std::int64_t cols, bool partial) {
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t h = hk * plan.group + r / sq, i = r % sq;
      const attention_variant& var = vars[heads > 1 ? r / sq : 0];
      float* sr = sc + r * KT;
      finish_scores<Arch>(sr, n, cols, var, var.score.slope(h), i, j0, partial);
      if (plan.weights) std::copy(sr, sr + cols, kept_rows + r * plan.skv_pad + j0);
      softmax_state st{m[r], l[r]};
      const float alpha = simd::softmax_step<Arch>(sr, n, st);
      m[r] = st.m;
      l[r] = st.l;
      if (alpha != 1.0f) simd::scale_row<Arch>(acc + r * dvp, dvp, alpha);
    }
  };
  std::int64_t offset = 0;  // of the current range in the concatenation
  for (int x = 0; x < keys.n; offset += keys.end[x] - keys.begin[x], ++x) {
    const std::int64_t ja = keys.begin[x] + std::max<std::int64_t>(0, a - offset);
    const std::int64_t jb = keys.begin[x] + std::min(keys.end[x] - keys.begin[x], e - offset);
    for (std::int64_t j0 = ja; j0 < jb; j0 += L) {
      const std::int64_t cols = std::min<std::int64_t>(L, jb - j0);
      const tile_state ts = group_state(vars, heads, sq, j0, j0 + cols);
      if (ts == tile_state::empty) {
        const std::int64_t resume = resume_after_empty(vars, heads, sq, j0 + cols, jb);
        if (plan.weights)
          for (std::int64_t r = 0; r < rows; ++r)
            std::fill(kept_rows + r * plan.skv_pad + j0, kept_rows + r * plan.skv_pad + resume,
                      -std::numeric_limits<float>::infinity());
        j0 = resume - L;  // the loop adds L
        continue;
      }
      if (in_place && ts == tile_state::full && cols == L) {
        std::int64_t n = std::min(in_place_keys, (jb - j0) / L * L);
        if (n > L && group_state(vars, heads, sq, j0, j0 + n) != tile_state::full) n = L;
        for (std::int64_t c = 0; c < n; ++c) {
          if (in_place_keys == L && j0 + c + prefetch_distance < jb) {  // 8+ rows: compute-bound, prefetches cost
            simd::prefetch_row(k.row(b, hk, j0 + c + prefetch_distance), d);
            simd::prefetch_row(v.row(b, hk, j0 + c + prefetch_distance), dv);
          }
          kr[c] = k.row(b, hk, j0 + c);
          vr[c] = v.row(b, hk, j0 + c);
        }
        group_scores_direct<Arch>(qb, rows, dp, d, kr, n, sc, KT);
        if constexpr (quantized) {
          k.scale_run(b, hk, j0, n, scales);
          scale_columns<Arch>(sc, rows, KT, scales, n);
        }
        fold_rows(j0, n, n, false);
        if constexpr (quantized) {  // weights times the values' scales
          v.scale_run(b, hk, j0, n, scales);
          scale_columns<Arch>(sc, rows, KT, scales, n);
        }
        group_pv_direct<Arch>(sc, KT, rows, vr, n, dv, acc, dvp);
        j0 += n - L;  // the loop adds L
        continue;
      }
      if constexpr (one_byte) {
        if (direct) {
          softmax_state st{m[0], l[0]};
          decode_tile_direct<Arch>(k, v, b, hk, j0, cols, jb, d, dv, qb, sc, acc, st, vars[0],
                                   vars[0].score.slope(hk * plan.group), 0, ts == tile_state::partial,
                                   plan.weights ? kept_rows : nullptr);
          m[0] = st.m;
          l[0] = st.l;
          continue;
        }
      }
      for (std::int64_t c = 0; c < L; ++c) {
        if (j0 + c + prefetch_distance < jb) {  // DRAM latency hides behind the work on this tile
          simd::prefetch_row(k.row(b, hk, j0 + c + prefetch_distance), d);
          simd::prefetch_row(v.row(b, hk, j0 + c + prefetch_distance), dv);
        }
        if (c < cols) {
          simd::widen_row<Arch>(k.row(b, hk, j0 + c), d, kb + c * dp, dp, k.scale(b, hk, j0 + c));
          simd::widen_row<Arch>(v.row(b, hk, j0 + c), dv, vb + c * dvp, dvp, v.scale(b, hk, j0 + c));
        } else {
          std::fill(kb + c * dp, kb + (c + 1) * dp, 0.0f);
          std::fill(vb + c * dvp, vb + (c + 1) * dvp, 0.0f);
        }
      }
      group_scores<Arch>(qb, rows, dp, kb, sc, KT);
      fold_rows(j0, L, cols, ts == tile_state::partial);
      simd::pv_tile<Arch>(sc, rows, cols, vb, dvp, acc, dvp, ts == tile_state::partial);
    }
  }
}

/// Kept scores of keys no row can see: -inf, so key weights give them 0.
inline void fill_unseen(const key_ranges& keys, std::int64_t len_pad, std::int64_t rows, std::int64_t stride,
                        float* kept_rows) {
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  std::int64_t from = 0;
  for (int x = 0; x <= keys.n; ++x) {
    const std::int64_t to = x < keys.n ? keys.begin[x] : len_pad;
    for (std::int64_t r = 0; r < rows && from < to; ++r) std::fill(kept_rows + r * stride + from, kept_rows + r * stride + to, neg_inf);
    if (x < keys.n) from = keys.end[x];
  }
}

template <class Arch, class TQ, class TO, class KS, class VS>
void flash_decode(const flash_cpu_plan<Arch>& plan, const flash_io<TQ, TO>& io, const KS& k, const VS& v,
                  const flash_scratch& scratch, const executor& exec) {
  constexpr int L = simd::lanes<Arch>;
  const attention_shape& s = plan.s;
  const std::int64_t d = s.d, dv = s.dv, dvp = plan.dvp, group = plan.group;
  const std::int64_t* const first = scratch.first_chunk;  // (decode_seqs + 1)
  const std::size_t slot_floats = plan.slot_floats();
  float* const partials = scratch.partials;  // (chunks) x (rows, dvp + 2)
  // The keys a sequence's rows can see (the band is the same for every head).
  const auto keys_of = [&](std::int64_t b) {
    return visible_keys(io.variant(b, k.length(b), d, 0).mask, 0, io.batch.rows(b));
  };

  parallel_for_slots(exec, plan.chunks, [&](std::int64_t item, std::int64_t slot) {
    const std::int64_t x = std::upper_bound(first, first + plan.decode_seqs + 1, item) - first - 1;
    const std::int64_t b = scratch.decode_seqs[x], splits = plan.splits(k.length(b));
    const std::int64_t hk = (item - first[x]) / splits, c = (item - first[x]) % splits;
    const key_ranges keys = keys_of(b);
    const std::int64_t chunk = ((keys.total() + splits - 1) / splits + L - 1) / L * L;
    const std::int64_t rows = group * io.batch.rows(b);
    float* kept_rows = scratch.kept + (b * s.hkv + hk) * plan.rows * plan.skv_pad;  // (rows, skv_pad)
    if (plan.weights && c == 0) fill_unseen(keys, (k.length(b) + L - 1) / L * L, rows, plan.skv_pad, kept_rows);
    decode_chunk(plan, io, k, v, b, hk, keys, c * chunk, std::min(keys.total(), (c + 1) * chunk),
                 partials + item * plan.partial_floats(), kept_rows, scratch.slots + slot * slot_floats);
  });

  // Merge each row's chunks into chunk 0's accumulator, in chunk order.
  const sink_normalizer sinks = make_variant(io.params, sequence_span{}, d).normalizer;
  parallel_for(exec, plan.decode_seqs * s.hkv, [&](std::int64_t pair) {
    const std::int64_t b = scratch.decode_seqs[pair / s.hkv], hk = pair % s.hkv, sq = io.batch.rows(b);
    const std::int64_t splits = plan.splits(k.length(b)), rows = group * sq;
    float* const part0 = partials + (first[pair / s.hkv] + hk * splits) * plan.partial_floats();
    const auto part = [&](std::int64_t c) { return part0 + c * plan.partial_floats(); };
    float row_lse[flash_cpu_plan<Arch>::max_decode_rows];
    for (std::int64_t r = 0; r < rows; ++r) {
      const std::int64_t h = hk * group + r / sq, i = r % sq;
      softmax_state st;
      for (std::int64_t c = 0; c < splits; ++c) st.m = std::max(st.m, part(c)[plan.rows * dvp + r]);
      float* acc = part0 + r * dvp;
      for (std::int64_t c = 0; c < splits; ++c) {
        const float mc = part(c)[plan.rows * dvp + r];
        const float w = mc == -std::numeric_limits<float>::infinity() ? 0.0f : std::exp(mc - st.m);
        st.l += w * part(c)[plan.rows * dvp + plan.rows + r];
        const float* ac = part(c) + r * dvp;
        for (std::int64_t y = 0; y < dv; ++y) acc[y] = c == 0 ? w * acc[y] : acc[y] + w * ac[y];
      }
      row_lse[r] = write_row(acc, st, sinks.sink(h), io.o_row(b, h, i), dv, io.lse_at(b, h, i));
    }
    if (plan.weights)
      decode_key_weights(plan, scratch.kept + (b * s.hkv + hk) * plan.rows * plan.skv_pad, row_lse, k.length(b),
                         io.kw, io.batch, b, hk);
  });
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
