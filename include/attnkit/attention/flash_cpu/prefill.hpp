// The prefill path of cpu flash: the key tiles of each (sequence, KV head) that
// any of its rows can see are packed once into (d, kv_tile) panels, then one
// work item per (head, query block) runs the tile body (scores, the variant's
// hooks, the online-softmax step, P.V) over the tiles the schedule yields for
// its rows (schedule.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "attnkit/attention/flash_cpu/key_weights.hpp"
#include "attnkit/attention/flash_cpu/plan.hpp"
#include "attnkit/attention/sparse/walk.hpp"
#include "attnkit/backend/cpu/arch.hpp"
#include "attnkit/backend/cpu/bf16_dot.hpp"
#include "attnkit/backend/cpu/convert.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/backend/cpu/transpose.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// The keys and values of one (sequence, KV head) as the prefill body reads
/// them: K packed into (d, KT) panels per tile, V packed into (tiles * KT, dvp)
/// rows, or read in place.
template <class Arch, class VS>
struct prefill_keys {
  static constexpr std::int64_t KT = simd::flash_tiling<Arch>::kv_tile;
  const flash_cpu_plan<Arch>& plan;
  const VS& v;
  std::int64_t b, hk;
  const float* kt;  // (tiles, d, KT)
  const float* vp;  // (tiles * KT, dvp); null: v in place

  // With bf16 pairs a panel holds (d + 1) / 2 words per key and V (tiles * KT / 2, dvp) words; the offsets below still fit.
  const float* panel(std::int64_t j0) const { return kt + j0 * plan.s.d; }
  const float* values(std::int64_t j) const {
    return vp ? vp + j * plan.dvp : reinterpret_cast<const float*>(v.row(b, hk, j));
  }
  std::int64_t values_stride() const { return vp ? plan.dvp : v.row(b, hk, 1) - v.row(b, hk, 0); }
  /// bf16 pairs: whether the values of the tile holding key j0 are all finite
  /// (pack_pair_tile keeps a word per tile past the pair panels, in the half they leave free).
  bool pair_tile_finite(std::int64_t j0) const { return finite_words(plan, vp)[j0 / KT] != 0u; }
  static std::uint32_t* finite_words(const flash_cpu_plan<Arch>& plan, const float* vp_head) {
    return reinterpret_cast<std::uint32_t*>(const_cast<float*>(vp_head) + plan.tiles * KT / 2 * plan.dvp);
  }

  /// f(c, key, run) for each run of keys[0, n) (ascending) that are
  /// consecutive inside one tile: columns [c, c + run) hold keys [key, key + run).
  template <class F>
  static void for_each_run(const std::int64_t* keys, std::int64_t n, F&& f) {
    for (std::int64_t c = 0; c < n;) {
      std::int64_t run = 1;
      while (c + run < n && keys[c + run] == keys[c] + run && (keys[c] + run) % KT != 0) ++run;
      f(c, keys[c], run);
      c += run;
    }
  }

  /// Whether the runs of keys[0, n) can be read in place: each starts at a
  /// whole register of scores (every run but the last fills whole registers),
  /// and the last, rounded up to a register, stays inside its tile's panel.
  static bool runs_in_place(const std::int64_t* keys, std::int64_t n) {
    constexpr std::int64_t L = simd::lanes<Arch>;
    bool ok = true;
    for_each_run(keys, n, [&](std::int64_t c, std::int64_t key, std::int64_t run) {
      ok = ok && (c + run == n ? key % KT + (run + L - 1) / L * L <= KT : run % L == 0);
    });
    return ok;
  }

  /// Copies keys[0, n) (ascending) into a (d, KT) panel and (n, dvp) values,
  /// a run at a time; the panel's columns past n are 0.
  void gather(const std::int64_t* keys, std::int64_t n, float* kp, float* vrows) const {
    const std::int64_t d = plan.s.d, dvp = plan.dvp, ldv = values_stride();
    for_each_run(keys, n, [&](std::int64_t c, std::int64_t key, std::int64_t run) {
      const float* src = kt + key / KT * d * KT + key % KT;
      for (std::int64_t x = 0; x < d; ++x) std::copy(src + x * KT, src + x * KT + run, kp + x * KT + c);
      for (std::int64_t y = 0; y < run; ++y) std::copy(values(key) + y * ldv, values(key) + y * ldv + dvp, vrows + (c + y) * dvp);
    });
    if (n < KT)
      for (std::int64_t x = 0; x < d; ++x) std::fill(kp + x * KT + n, kp + (x + 1) * KT, 0.0f);
  }
};

/// Whether a call with these element types may run its prefill on bf16 pairs:
/// Q, K and V all bf16 on an arch with the pair dot product.
template <class Arch, class TQ, class TK, class TV>
inline constexpr bool bf16_pair_types =
    has_bf16_dot<Arch> && ATTNKIT_HAS_BF16_DOT && std::is_same_v<std::remove_const_t<TQ>, bfloat16> &&
    std::is_same_v<std::remove_const_t<TK>, bfloat16> && std::is_same_v<std::remove_const_t<TV>, bfloat16>;

/// The tile products of a prefill run. fp32 (Pairs false): q pre-scaled in an
/// fp32 block, K and V in fp32 panels. Pairs: q, K and V stay bf16 as pair rows
/// (bf16_dot.hpp): Q.K^T is exact products summed in fp32 and scaled at the
/// end; P is rounded to bf16 for P.V, which sums in fp32.
template <class Arch, bool Pairs>
struct prefill_dots {
  static constexpr std::int64_t KT = simd::flash_tiling<Arch>::kv_tile;
  std::int64_t d, dvp;
  float scale;

  std::int64_t q_words() const { return Pairs ? (d + 1) / 2 : d; }  // a query row's width in qb

  template <class TQ>
  void load_q(const TQ* src, float* dst) const {
    if constexpr (Pairs) {
      pack_pairs(src, d, 1, reinterpret_cast<std::uint32_t*>(dst));
    } else {
      simd::widen_row<Arch>(src, d, dst, d, scale);
    }
  }
  /// s (rows, cols) = the scores of the first cols keys (a multiple of lanes)
  /// of the tile whose panel is kp; s's rows KT apart.
  void qk(const float* qb, std::int64_t rows, const float* kp, float* s, std::int64_t cols = KT) const {
#if ATTNKIT_HAS_BF16_DOT
    if constexpr (Pairs)
      return simd::dot2_tile<false>(reinterpret_cast<const std::uint32_t*>(qb), q_words(),
                                    reinterpret_cast<const std::uint32_t*>(kp), KT, s, KT, rows, cols, q_words(), scale);
#endif
    simd::gemm_tile<Arch, false>(qb, d, kp, KT, s, KT, rows, cols, d);
  }
  /// A row of weights, ready for pv.
  void weights_ready(float* sr) const {
#if ATTNKIT_HAS_BF16_DOT
    if constexpr (Pairs) simd::round_pairs(sr, KT);
#else
    (void)sr;
#endif
  }
  /// acc (rows, dvp) += p (rows, cols) * values (cols, dvp), values' rows ldv
  /// apart. masked: some weights are 0 for keys a row cannot see; on pairs a
  /// tile whose values are not all finite then takes each product in fp32
  /// (0 * NaN must add nothing), else a zero weight adds 0 on the pair path too.
  void pv(const float* p, std::int64_t rows, std::int64_t cols, const float* values, std::int64_t ldv, float* acc,
          bool masked, bool values_finite = true) const {
    (void)values_finite;  // read on pairs only
#if ATTNKIT_HAS_BF16_DOT
    if constexpr (Pairs) {
      const auto* a = reinterpret_cast<const std::uint32_t*>(p);
      const auto* b = reinterpret_cast<const std::uint32_t*>(values);
      if (masked && !values_finite)
        return simd::dot2_tile<true, true>(a, KT, b, dvp, acc, dvp, rows, dvp, (cols + 1) / 2);
      return simd::dot2_tile<true>(a, KT, b, dvp, acc, dvp, rows, dvp, (cols + 1) / 2);
    }
#endif
    simd::pv_tile<Arch>(p, rows, cols, values, ldv, acc, dvp, masked);
  }

  /// dst[x * stride] = the pair (src[2x], src[2x + 1]) for x < (n + 1) / 2; 0 past n.
  template <class T>
  static void pack_pairs(const T* src, std::int64_t n, std::int64_t stride, std::uint32_t* dst) {
    static_assert(std::is_same_v<T, bfloat16>, "pair rows hold bf16");
    for (std::int64_t x = 0; 2 * x < n; ++x) {
      const std::uint32_t hi = 2 * x + 1 < n ? src[2 * x + 1].bits : 0u;
      dst[x * stride] = src[2 * x].bits | hi << 16;
    }
  }
};

/// Rows [i0, i0 + rows) of a partially visible tile of keys [j0, j1) (a causal
/// diagonal, a window's edge) in blocks of mr: block x reads keys [j0, j0 + end[x]),
/// up to the last key one of its rows sees, and computes scores to width[x],
/// that rounded up to lanes; the rest of the masked triangle is never computed.
template <class Arch>
struct partial_tile_rows {
  static constexpr std::int64_t MR = simd::flash_tiling<Arch>::mr, L = simd::lanes<Arch>;
  std::int64_t rows;
  std::int64_t end[simd::flash_tiling<Arch>::q_tile / MR], width[simd::flash_tiling<Arch>::q_tile / MR];

  partial_tile_rows(const attention_mask& mask, std::int64_t i0, std::int64_t rows_, std::int64_t j0, std::int64_t j1)
      : rows(rows_) {
    for (std::int64_t r0 = 0; r0 < rows; r0 += MR) {
      std::int64_t last = -1;
      for (std::int64_t r = r0; r < std::min(rows, r0 + MR); ++r) last = std::max(last, mask.band(i0 + r).last);
      end[r0 / MR] = std::clamp<std::int64_t>(last + 1 - j0, 0, j1 - j0);
      width[r0 / MR] = (end[r0 / MR] + L - 1) / L * L;
    }
  }
  /// f(r0, block rows, end, width) for each block that sees a key of the tile.
  template <class F>
  void for_each(F&& f) const {
    for (std::int64_t r0 = 0; r0 < rows; r0 += MR)
      if (end[r0 / MR] > 0) f(r0, std::min(MR, rows - r0), end[r0 / MR], width[r0 / MR]);
  }
};

/// Rows [i0, i0 + rows) of query head h of sequence b through the tile body,
/// over the tiles its schedule yields, with its state in `work` (a slot).
template <class Arch, bool Pairs, class TQ, class TO, class VS>
void prefill_run(const flash_cpu_plan<Arch>& plan, const flash_io<TQ, TO>& io, const attention_variant& var,
                 const prefill_keys<Arch, VS>& keys, std::int64_t b, std::int64_t h, std::int64_t i0,
                 std::int64_t rows, float* work) {
  constexpr std::int64_t KT = simd::flash_tiling<Arch>::kv_tile, L = simd::lanes<Arch>;
  const std::int64_t d = plan.s.d, dv = plan.s.dv, dvp = plan.dvp, len = keys.v.length(b);
  const float slope = var.score.slope(h);
  float* qb = work;                  // (rows, d), pre-scaled
  float* sc = qb + plan.q_floats();  // (rows, KT) scores, then weights
  float* acc = sc + plan.s_floats(); // (rows, dvp)
  float* m = acc + plan.acc_floats();  // (rows) running max
  float* l = m + simd::flash_tiling<Arch>::q_tile;  // (rows) running sum
  const prefill_dots<Arch, Pairs> dots{d, dvp, var.score.scale};
  for (std::int64_t r = 0; r < rows; ++r) {
    dots.load_q(io.q_row(b, h, i0 + r), qb + r * dots.q_words());
    const softmax_state init;
    m[r] = init.m;
    l[r] = init.l;
  }
  std::fill(acc, acc + rows * dvp, 0.0f);
  // One visit of cols keys: qk() fills the scores, pv(masked) adds P.V; keys
  // are j0 + c, or gathered[c] (never masked). Row r's scores past
  // widths[r / MR] (a multiple of lanes; all of KT when null) are masked and
  // neither computed nor read.
  constexpr std::int64_t MR = simd::flash_tiling<Arch>::mr;
  const auto visit = [&](const auto& qk, std::int64_t j0, std::int64_t cols, tile_state ts, const auto& pv,
                         const std::int64_t* gathered, const std::int64_t* widths = nullptr) {
    qk();
    for (std::int64_t r = 0; r < rows; ++r) {
      float* sr = sc + r * KT;
      const std::int64_t n = widths ? widths[r / MR] : KT;
      if (gathered)
        finish_gathered<Arch>(sr, KT, cols, var, slope, i0 + r, gathered, plan.dist_row(work));
      else
        finish_scores<Arch>(sr, n, cols, var, slope, i0 + r, j0, ts == tile_state::partial);
      softmax_state st{m[r], l[r]};
      const float alpha = simd::softmax_step<Arch>(sr, n, st);
      m[r] = st.m;
      l[r] = st.l;
      if (alpha != 1.0f) simd::scale_row<Arch>(acc + r * dvp, dvp, alpha);
      dots.weights_ready(sr);
    }
    pv(ts == tile_state::partial);  // masked keys must add nothing, whatever v holds
  };
  const std::int64_t ldv = len > 0 ? keys.values_stride() : 0;  // no key: no row to take a stride from
  const auto aligned = [&](std::int64_t j0, std::int64_t j1) {
    const tile_state ts = var.mask.classify(i0, i0 + rows, j0, j1);
    if (ts == tile_state::empty) return;
    if (!var.mask.sparse.given() || ts == tile_state::full) {
      const float* vals = Pairs ? keys.vp + j0 / 2 * dvp : keys.values(j0);  // pair rows hold two keys
      const bool finite = !Pairs || keys.pair_tile_finite(j0);
      if (ts == tile_state::full)
        return visit([&] { dots.qk(qb, rows, keys.panel(j0), sc); }, j0, j1 - j0, ts,
                     [&](bool masked) { dots.pv(sc, rows, j1 - j0, vals, ldv, acc, masked, finite); }, nullptr);
      const partial_tile_rows<Arch> blocks(var.mask, i0, rows, j0, j1);
      visit([&] {
              blocks.for_each([&](std::int64_t r0, std::int64_t m_rows, std::int64_t, std::int64_t width) {
                dots.qk(qb + r0 * dots.q_words(), m_rows, keys.panel(j0), sc + r0 * KT, width);
              });
            },
            j0, j1 - j0, ts,
            [&](bool) {
              blocks.for_each([&](std::int64_t r0, std::int64_t m_rows, std::int64_t end, std::int64_t) {
                dots.pv(sc + r0 * KT, m_rows, end, vals, ldv, acc + r0 * dvp, true, finite);
              });
            },
            nullptr, blocks.width);
      return;
    }
    if constexpr (!Pairs) {  // layouts run on fp32 panels
    // Under a layout, only the columns from the first key it may select to the
    // rows' last visible key: the rest of the tile is masked, so never computed.
    const std::int64_t lo = (std::max(j0, var.mask.next_selected(i0, i0 + rows, j0)) - j0) / L * L;
    const std::int64_t hi = std::min(j1, var.mask.band(i0 + rows - 1).last + 1) - j0;
    if (lo >= hi) return;
    const std::int64_t cols = std::min(KT - lo, (hi - lo + L - 1) / L * L);
    visit([&] { simd::gemm_tile<Arch, false>(qb, d, keys.panel(j0) + lo, KT, sc + lo, KT, rows, cols, d); }, j0,
          j1 - j0, ts, [&](bool) { simd::pv_tile<Arch>(sc + lo, rows, hi - lo, keys.values(j0 + lo), ldv, acc, dvp, true); },
          nullptr);
    }
  };
  // Gathered keys: straight from the packed tiles, a run at a time, when the
  // runs sit on whole registers (blocks of 16 keys and more); else copied first.
  const auto gathered = [&](const std::int64_t* ids, std::int64_t n) {
    using run_reader = prefill_keys<Arch, VS>;
    if (ids[0] % KT == 0 && ids[n - 1] == ids[0] + n - 1 && (n == KT || ids[0] + n == len))
      return aligned(ids[0], ids[0] + n);  // a whole packed tile
    if (run_reader::runs_in_place(ids, n)) {
      const auto qk = [&] {
        run_reader::for_each_run(ids, n, [&](std::int64_t c, std::int64_t key, std::int64_t run) {
          simd::gemm_tile<Arch, false>(qb, d, keys.panel(key / KT * KT) + key % KT, KT, sc + c, KT, rows,
                                       (run + L - 1) / L * L, d);
        });
      };
      const auto pv = [&](bool) {
        run_reader::for_each_run(ids, n, [&](std::int64_t c, std::int64_t key, std::int64_t run) {
          simd::gemm_tile<Arch, true>(sc + c, KT, keys.values(key), ldv, acc, dvp, rows, dvp, run);
        });
      };
      return visit(qk, 0, n, tile_state::full, pv, ids);
    }
    float* kp = plan.gather_panel(work);  // (d, KT)
    float* vg = kp + d * KT;              // (KT, dvp)
    keys.gather(ids, n, kp, vg);
    visit([&] { simd::qk_tile<Arch>(qb, rows, d, kp, sc); }, 0, n, tile_state::full,
          [&](bool) { simd::pv_tile<Arch>(sc, rows, n, vg, dvp, acc, dvp); }, ids);
  };
  if (Pairs || !var.mask.sparse.given())
    for_each_tile(visible_keys(var.mask, i0, i0 + rows), KT, len, aligned);
  else
    for_each_sparse_visit(var.mask, i0, i0 + rows, len, KT, plan.tile_marks(work), plan.gather_keys(work), aligned,
                          gathered);
  const float sink = var.normalizer.sink(h);
  for (std::int64_t r = 0; r < rows; ++r)
    write_row(acc + r * dvp, softmax_state{m[r], l[r]}, sink, io.o_row(b, h, i0 + r), dv, io.lse_at(b, h, i0 + r));
}

/// Tile t of (sequence b, KV head hk) as bf16 pair panels: keys (d2, KT) words
/// with d2 = (d + 1) / 2, values (KT / 2, dvp) words; zeros past the sequence's
/// end and past d and dv. *finite: 1 if every value of the tile is finite, else 0.
template <class Arch, class KS, class VS>
void pack_pair_tile(const flash_cpu_plan<Arch>& plan, const KS& k, const VS& v, std::int64_t b, std::int64_t hk,
                    std::int64_t t, float* kt, float* vp, std::uint32_t* finite) {
  constexpr std::int64_t KT = simd::flash_tiling<Arch>::kv_tile;
  using dots = prefill_dots<Arch, true>;
  const std::int64_t d = plan.s.d, dv = plan.s.dv, dvp = plan.dvp, len = k.length(b);
  auto* kw = reinterpret_cast<std::uint32_t*>(kt);  // (d2, KT)
  auto* vw = reinterpret_cast<std::uint32_t*>(vp);  // (KT / 2, dvp)
  for (std::int64_t c = 0; c < KT; ++c) {
    const std::int64_t j = t * KT + c;
    if (j < len) {
      dots::pack_pairs(k.row(b, hk, j), d, KT, kw + c);
    } else {
      for (std::int64_t x = 0; 2 * x < d; ++x) kw[x * KT + c] = 0u;
    }
  }
  std::uint32_t special = 0;  // some value's exponent is all ones (inf or NaN)
  for (std::int64_t c = 0; c < KT; c += 2) {
    std::uint32_t* out = vw + c / 2 * dvp;
    std::fill(out, out + dvp, 0u);
    for (std::int64_t half = 0; half < 2; ++half) {
      if (t * KT + c + half >= len) break;
      const auto* row = v.row(b, hk, t * KT + c + half);
      for (std::int64_t y = 0; y < dv; ++y) {
        out[y] |= static_cast<std::uint32_t>(row[y].bits) << (16 * half);
        special |= (row[y].bits & 0x7f80u) == 0x7f80u;
      }
    }
  }
  *finite = special ? 0u : 1u;
}

template <class Arch, class TQ, class KS, class VS, class TO>
void flash_prefill(const flash_cpu_plan<Arch>& plan, const flash_io<TQ, TO>& io, const KS& k, const VS& v,
                   const flash_scratch& scratch, const executor& exec) {
  using tiling = simd::flash_tiling<Arch>;
  constexpr std::int64_t QT = tiling::q_tile, KT = tiling::kv_tile;
  const attention_shape& s = plan.s;
  const std::int64_t d = s.d, dv = s.dv, dvp = plan.dvp, group = plan.group;
  float* const kt_all = scratch.kt;  // (heads_per_pass, tiles, d, KT)
  float* const vp_all = scratch.vp;  // (heads_per_pass, tiles * KT, dvp)
  const std::size_t slot_floats = plan.slot_floats();
  const std::int64_t seq_heads = plan.prefill_seqs * s.hkv;  // (sequence, KV head) pairs
  const auto seq_of = [&](std::int64_t pair) { return scratch.prefill_seqs[pair / s.hkv]; };
  // bf16 pair products where the types and arch allow; layouts and key weights read fp32 panels.
  const bool pairs = bf16_pair_types<Arch, TQ, typename KS::element, typename VS::element> && !plan.sparse &&
                     !plan.weights;

  for (std::int64_t first = 0; first < seq_heads; first += plan.heads_per_pass) {
    const std::int64_t count = std::min(plan.heads_per_pass, seq_heads - first);

    // Pack the tiles any row of the sequence can see: keys transposed to (d, KT),
    // values (if needed) to (KT, dvp); zeros past the end.
    parallel_for_slots(exec, count * plan.tiles, [&](std::int64_t item, std::int64_t slot) {
      const std::int64_t hp = item / plan.tiles, t = item % plan.tiles;
      const std::int64_t b = seq_of(first + hp), hk = (first + hp) % s.hkv, len = k.length(b);
      if (!io.tile_reached(b, len, d, hk, group, t * KT, (t + 1) * KT)) return;
      float* kt = kt_all + (hp * plan.tiles + t) * d * KT;
      if constexpr (bf16_pair_types<Arch, TQ, typename KS::element, typename VS::element>) {
        if (pairs) {
          float* vp_head = vp_all + hp * plan.tiles * KT * dvp;
          return pack_pair_tile(plan, k, v, b, hk, t, kt, vp_head + t * KT / 2 * dvp,
                                prefill_keys<Arch, VS>::finite_words(plan, vp_head) + t);
        }
      }
      // Keys widened 16 rows at a time, then transposed as 16 x 16 blocks: a
      // scalar transpose, column by column, cost 7% of a 512-row prefill.
      constexpr std::int64_t block = 16;
      static_assert(KT % block == 0, "a tile holds whole blocks of keys");
      float* rows = scratch.slots + slot * slot_floats;  // (block, d)
      for (std::int64_t c0 = 0; c0 < KT; c0 += block) {
        for (std::int64_t c = 0; c < block; ++c) {
          const std::int64_t j = t * KT + c0 + c;
          if (j < len)
            simd::widen_row<Arch>(k.row(b, hk, j), d, rows + c * d, d, k.scale(b, hk, j));
          else
            std::fill(rows + c * d, rows + (c + 1) * d, 0.0f);
          if (!plan.pack_v) continue;
          float* vr = vp_all + (hp * plan.tiles * KT + j) * dvp;
          if (j < len)
            simd::widen_row<Arch>(v.row(b, hk, j), dv, vr, dvp, v.scale(b, hk, j));
          else
            std::fill(vr, vr + dvp, 0.0f);
        }
        simd::transpose<Arch>(rows, d, block, d, kt + c0, KT);
      }
    });

    // Compute: one (head, query block) per item, over the tiles its rows can see.
    // Under a layout, each run of rows inside one of its query blocks is a visit
    // schedule of its own (sparse/walk.hpp).
    if (plan.output) parallel_for_slots(exec, count * group * plan.q_blocks, [&](std::int64_t item, std::int64_t slot) {
      const std::int64_t hp = item / (group * plan.q_blocks), h_in_group = item / plan.q_blocks % group;
      const std::int64_t b = seq_of(first + hp), hk = (first + hp) % s.hkv, h = hk * group + h_in_group;
      const std::int64_t i0 = item % plan.q_blocks * QT, seq_rows = io.batch.rows(b);
      if (i0 >= seq_rows) return;
      const std::int64_t rows = std::min(QT, seq_rows - i0), len = k.length(b);
      const attention_variant var = io.variant(b, len, d, h);
      const prefill_keys<Arch, VS> keys{plan, v, b, hk, kt_all + hp * plan.tiles * d * KT,
                                        plan.pack_v ? vp_all + hp * plan.tiles * KT * dvp : nullptr};
      float* const work = scratch.slots + slot * slot_floats;
      if constexpr (bf16_pair_types<Arch, TQ, typename KS::element, typename VS::element>) {
        if (pairs) return prefill_run<Arch, true>(plan, io, var, keys, b, h, i0, rows, work);
      }
      if (!var.mask.sparse.given()) return prefill_run<Arch, false>(plan, io, var, keys, b, h, i0, rows, work);
      const std::int64_t bq = var.mask.sparse.block_q;
      for (std::int64_t r = i0; r < i0 + rows; r = (r / bq + 1) * bq)
        prefill_run<Arch, false>(plan, io, var, keys, b, h, r, std::min(i0 + rows, (r / bq + 1) * bq) - r, work);
    });

    if (plan.weights) prefill_key_weights(plan, io, k, exec, scratch, first, count);
  }
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
