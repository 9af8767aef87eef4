// What every cpu flash path shares: the plan that sizes a call's tiles and
// scratch (flash_attention_workspace_size reads it too), the score hooks on
// registers, and the per-row score finishing and output writing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "attnkit/attention/key_weights_arg.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/schedule.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/attention/variant.hpp"
#include "attnkit/backend/cpu/flash_tiles.hpp"
#include "attnkit/backend/cpu/tanh.hpp"
#include "attnkit/backend/cpu/xsimd_compat.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/softmax_state.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE

/// The score hooks' math on registers: the variant (variant.hpp) runs on
/// xsimd batches exactly as on floats.
template <class A>
struct value_math<xsimd::batch<float, A>> {
  static xsimd::batch<float, A> tanh(xsimd::batch<float, A> x) { return simd::tanh<A>(x); }
  static xsimd::batch<float, A> abs(xsimd::batch<float, A> x) { return xsimd::abs(x); }
};

namespace detail {

/// What a cpu flash call produces, beyond its shape.
struct flash_request {
  bool values_in_place = false;  // v is fp32 with unit stride: prefill reads it without packing
  bool output = true;            // o (and lse); false: only key weights from a given lse
  bool key_weights = false;      // key_weights.out is requested
  bool lse_given = true;         // the caller passes lse (else key weights need scratch for it)
  bool sparse = false;           // a block-sparse layout: prefill gathers keys (sparse/walk.hpp)
};

/// Sizes of one cpu flash call; workspace_size and the kernel both derive theirs
/// from it. Each sequence takes the decode path (its GQA group's query rows
/// together, keys split into chunks) when group * rows <= 16, else the prefill
/// path; both choices and the key splits depend on that sequence alone, so its
/// result is the same bits whatever else shares the batch.
template <class Arch>
struct flash_cpu_plan {
  using tiling = simd::flash_tiling<Arch>;
  static constexpr std::int64_t max_decode_rows = 16;
  static constexpr std::int64_t min_chunk = 256;  // decode: keys per chunk at least

  attention_shape s{};  // b: sequences, sq: most rows, skv: longest
  std::int64_t slots = 1;
  std::int64_t group = 1, dp = 0, dvp = 0;
  bool empty = false;                // no query row: nothing to compute, no scratch
  bool output = true;                // o and lse are computed (else only key weights)
  bool pack_v = true;                // prefill: values copied to fp32 panels
  bool weights = false;              // key weights requested
  bool own_lse = false;              // prefill: lse lives in scratch for the key-weight pass
  bool sparse = false;               // prefill: scratch to gather keys in
  std::int64_t prefill_seqs = 0;     // sequences on the prefill path
  std::int64_t heads_per_pass = 1;   // prefill: KV heads packed at once
  std::int64_t tiles = 0;            // prefill: kv tiles of the longest prefill sequence
  std::int64_t q_blocks = 0;         // prefill: query blocks of the tallest prefill sequence
  std::int64_t decode_seqs = 0;      // sequences on the decode path
  std::int64_t rows = 0;             // decode: the most query rows of one group (group * rows)
  std::int64_t chunks = 0;           // decode: (sequence, KV head, chunk) items in all
  std::int64_t skv_pad = 0;          // decode: skv rounded up to lanes, the row stride of kept scores

  /// The plan of a call whose sequence b has rows(b) query rows and length(b) keys.
  template <class Rows, class Lengths>
  flash_cpu_plan(const char* fn, const attention_shape& shape, std::int64_t concurrency, const flash_request& req,
                 const Rows& rows_of, const Lengths& length_of)
      : s(shape) {
    init(fn, concurrency, req);
    if (empty) return;
    for (std::int64_t b = 0; b < s.b; ++b) {
      if (rows_of(b) == 0) continue;  // a sequence with no query row is on neither path
      if (on_decode_path(rows_of(b))) {
        ++decode_seqs;
        chunks += s.hkv * splits(length_of(b));
        rows = std::max(rows, group * rows_of(b));
      } else {
        ++prefill_seqs;
        tiles = std::max(tiles, (length_of(b) + tiling::kv_tile - 1) / tiling::kv_tile);
        q_blocks = std::max(q_blocks, (rows_of(b) + tiling::q_tile - 1) / tiling::q_tile);
      }
    }
    heads_per_pass = std::max<std::int64_t>(1, std::min(prefill_seqs * s.hkv, slots));
  }

  /// An upper bound for every call of at most s.b sequences, s.sq rows and s.skv
  /// keys each (sizes only grow with them): every sequence counted on both paths.
  static flash_cpu_plan bound(const char* fn, const attention_shape& shape, std::int64_t concurrency,
                              const flash_request& req) {
    flash_cpu_plan p(fn, shape, concurrency, req, [](std::int64_t) { return std::int64_t{0}; },
                     [](std::int64_t) { return std::int64_t{0}; });
    if (p.empty) return p;
    p.decode_seqs = p.prefill_seqs = p.s.b;
    p.rows = std::min(max_decode_rows, p.group * p.s.sq);
    p.chunks = p.s.b * p.s.hkv * p.splits(p.s.skv);
    p.tiles = (p.s.skv + tiling::kv_tile - 1) / tiling::kv_tile;
    p.q_blocks = (p.s.sq + tiling::q_tile - 1) / tiling::q_tile;
    p.heads_per_pass = std::max<std::int64_t>(1, std::min(p.s.b * p.s.hkv, p.slots));
    return p;
  }

  bool on_decode_path(std::int64_t seq_rows) const { return output && group * seq_rows <= max_decode_rows; }

  /// Key chunks of a decode sequence of `len` keys: its own length and the thread count decide.
  std::int64_t splits(std::int64_t len) const {
    return std::clamp<std::int64_t>((len + min_chunk - 1) / min_chunk, 1, 4 * slots);
  }

  // Prefill scratch: packed K (and V) of heads_per_pass heads, then per slot a
  // query block, a score tile, an accumulator, row states and a row buffer.
  std::size_t kt_floats() const { return static_cast<std::size_t>(heads_per_pass * tiles * tiling::kv_tile * s.d); }
  std::size_t vp_floats() const {
    return pack_v ? static_cast<std::size_t>(heads_per_pass * tiles * tiling::kv_tile * dvp) : 0;
  }
  std::size_t q_floats() const { return static_cast<std::size_t>(tiling::q_tile * s.d); }
  std::size_t s_floats() const { return static_cast<std::size_t>(tiling::q_tile * tiling::kv_tile); }
  std::size_t acc_floats() const { return static_cast<std::size_t>(tiling::q_tile * dvp); }
  // Decode scratch: a partial (acc, m, l) per chunk, then per slot the group's
  // query rows, one tile of keys and values in fp32, and the rows' scores.
  std::size_t partial_floats() const { return static_cast<std::size_t>(rows * dvp + round_up(2 * rows)); }
  std::size_t partials_floats() const { return static_cast<std::size_t>(chunks) * partial_floats(); }
  // Key weights: decode keeps every row's scores; prefill needs the lse if the caller did not pass it.
  std::size_t kept_scores_floats() const {
    return weights && decode_seqs > 0 ? static_cast<std::size_t>(s.b * s.hkv * rows * skv_pad) : 0;
  }
  std::size_t lse_floats() const { return own_lse ? static_cast<std::size_t>(s.b * s.hq * s.sq) : 0; }
  /// Index tables: the sequences of each path, and each decode sequence's first chunk item.
  std::size_t index_entries() const { return static_cast<std::size_t>(3 * s.b + 1); }

  /// Floats of one slot's scratch; a multiple of 16 so every slot stays 64-byte aligned.
  std::size_t slot_floats() const {
    constexpr std::int64_t L = tiling::lanes;
    const std::int64_t dec = decode_seqs > 0 ? rows * dp + L * (dp + dvp) + rows * tiling::kv_tile : 0;
    std::int64_t pre = prefill_seqs > 0 ? prefill_state_floats() + dp : 0;
    if (prefill_seqs > 0 && sparse) pre = gather_floats() + (tiles + 3) / 4 + 16;
    return static_cast<std::size_t>(round_up(std::max(dec, pre)));
  }

  // A prefill slot: q block, scores, accumulator, row states; with a layout then
  // a gathered key panel (d, KT), its values (KT, dvp), per-key distances (KT),
  // key ids (KT int64) and tile marks (tiles bytes).
  std::int64_t prefill_state_floats() const { return round_up(tiling::q_tile * (s.d + tiling::kv_tile + dvp + 2)); }
  std::int64_t gather_floats() const { return prefill_state_floats() + tiling::kv_tile * (s.d + dvp + 3); }
  float* gather_panel(float* slot) const { return slot + prefill_state_floats(); }
  float* dist_row(float* slot) const { return gather_panel(slot) + tiling::kv_tile * (s.d + dvp); }
  std::int64_t* gather_keys(float* slot) const { return reinterpret_cast<std::int64_t*>(dist_row(slot) + tiling::kv_tile); }
  std::uint8_t* tile_marks(float* slot) const { return reinterpret_cast<std::uint8_t*>(slot + gather_floats()); }

  std::size_t bytes() const {
    if (empty) return 0;
    const std::size_t all_slots = static_cast<std::size_t>(slots) * slot_floats();
    // flash_scratch takes them in this order.
    return scratch_arena::bytes_for({2 * index_entries(), partials_floats(), kept_scores_floats(), kt_floats(),
                                     vp_floats(), lse_floats(), all_slots});
  }

  static std::int64_t round_up(std::int64_t n) { return (n + 15) / 16 * 16; }

 private:
  void init(const char* fn, std::int64_t concurrency, const flash_request& req) {
    constexpr std::int64_t L = tiling::lanes;
    slots = std::max<std::int64_t>(1, concurrency);
    weights = req.key_weights;
    output = req.output;
    empty = s.b * s.hq * s.sq == 0;  // validated extents: the product fits
    if (empty) return;               // no work, no scratch
    // A bound on every array below, before any of their products is taken.
    const long double skv_pad_ld = static_cast<long double>(s.skv) + tiling::kv_tile;
    const long double d_ld = static_cast<long double>(s.d), dv_ld = static_cast<long double>(s.dv);  // no int64 sums
    const long double seqs = static_cast<long double>(s.b) * s.hkv;
    check_scratch_floats(fn, slots * skv_pad_ld * (d_ld + dv_ld + 2 * L) +
                                 seqs * 4 * slots * (max_decode_rows * (dv_ld + L) + 32) +
                                 static_cast<long double>(s.b) * s.hq * s.sq * (skv_pad_ld + dv_ld + 2 * L + 4) +
                                 slots * (tiling::q_tile + L + 16.0L) * (d_ld + dv_ld + tiling::kv_tile + 2 * L) +
                                 6.0L * s.b);
    group = s.hq / s.hkv;
    dp = (s.d + L - 1) / L * L;
    dvp = (s.dv + L - 1) / L * L;
    pack_v = req.output && !(req.values_in_place && s.dv % L == 0);
    own_lse = weights && !req.lse_given;
    sparse = req.sparse;
    skv_pad = (s.skv + L - 1) / L * L;
  }
};

/// The inputs and outputs of a checked call, as the cpu paths read them.
template <class TQ, class TO>
struct flash_io {
  tensor_view<TQ, 4> q;       // (b, hq, sq, d) or packed (1, hq, total, d)
  tensor_view<TO, 4> o;       // like q, dv columns
  tensor_view<float, 3> lse;  // like q without d, or empty
  attention_params params;
  key_weights kw;
  attention_batch batch;

  attention_variant variant(std::int64_t b, std::int64_t len, std::int64_t d, std::int64_t h) const {
    return batch.variant(params, b, len, d, h);
  }
  const TQ* q_row(std::int64_t b, std::int64_t h, std::int64_t i) const {
    return &q(batch.q_batch(b), h, batch.row0(b) + i, 0);
  }
  TO* o_row(std::int64_t b, std::int64_t h, std::int64_t i) const { return &o(batch.q_batch(b), h, batch.row0(b) + i, 0); }
  float* lse_at(std::int64_t b, std::int64_t h, std::int64_t i) const {
    return is_given(lse) ? &lse(batch.q_batch(b), h, batch.row0(b) + i) : nullptr;
  }

  /// Whether some row of some head of KV head hk's group (of `group` heads) of
  /// sequence b can see a key of tile [j0, j1): the tiles a path packs (and so reads).
  bool tile_reached(std::int64_t b, std::int64_t len, std::int64_t d, std::int64_t hk, std::int64_t group,
                    std::int64_t j0, std::int64_t j1) const {
    const std::int64_t rows = batch.rows(b);
    const attention_variant var = variant(b, len, d, hk * group);
    if (j0 >= len || !tile_visited(visible_keys(var.mask, 0, rows), j0, j1)) return false;
    if (!batch.sparse.given()) return true;
    j1 = std::min(j1, len);
    for (std::int64_t h = hk * group; h < (hk + 1) * group; h += batch.sparse.head_group)
      if (variant(b, len, d, h).mask.classify_sparse(0, rows, j0, j1) != tile_state::empty) return true;
    return false;
  }
};

/// The scratch of a call, taken from its arena in the order flash_cpu_plan::bytes lists.
struct flash_scratch {
  std::int64_t* prefill_seqs;  // (prefill_seqs) sequence ids
  std::int64_t* decode_seqs;   // (decode_seqs) sequence ids
  std::int64_t* first_chunk;   // (decode_seqs + 1) each decode sequence's first chunk item
  float *partials, *kept, *kt, *vp, *lse, *slots;

  template <class Arch>
  flash_scratch(const flash_cpu_plan<Arch>& plan, scratch_arena& arena) {
    prefill_seqs = arena.take_indices(plan.index_entries());
    decode_seqs = prefill_seqs + plan.s.b;
    first_chunk = decode_seqs + plan.s.b;
    partials = arena.take(plan.partials_floats());
    kept = arena.take(plan.kept_scores_floats());
    kt = arena.take(plan.kt_floats());
    vp = arena.take(plan.vp_floats());
    lse = arena.take(plan.lse_floats());
    slots = arena.take(plan.slots * plan.slot_floats());
  }
};

/// s[c] = -inf for the keys j0 + c (c < n) that row i's block-sparse layout
/// neither lists nor counts among its sinks or window keys.
inline void hide_unselected(const attention_mask& m, std::int64_t i, std::int64_t j0, std::int64_t n, float* s) {
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  const sparse_blocks& sp = m.sparse;
  // The layout's band as key indices: sinks [0, sink_end), window [w0, w1); both end at the row's position.
  const std::int64_t w1 = m.position(i) - m.span.k_pos + 1, w0 = w1 - sp.window;
  const std::int64_t sink_end = std::min(sp.sinks - m.span.k_pos, w1);
  const auto hide = [&](std::int64_t lo, std::int64_t hi) {  // keys [lo, hi) are in no listed block
    lo = std::max({lo, j0, sink_end});
    hi = std::min(hi, j0 + n);
    for (std::int64_t j = lo; j < std::min(hi, w0); ++j) s[j - j0] = neg_inf;
    for (std::int64_t j = std::max(lo, w1); j < hi; ++j) s[j - j0] = neg_inf;
  };
  const std::int64_t qb = i / sp.block_q;
  std::int64_t next = j0;  // keys before it are decided
  for (std::int64_t at = sp.lower_bound(qb, j0 / sp.block_k); at < sp.list_end(qb) && sp.id(at) * sp.block_k < j0 + n;
       ++at) {
    hide(next, sp.id(at) * sp.block_k);
    next = (sp.id(at) + 1) * sp.block_k;
  }
  hide(next, j0 + n);
}

/// finish_scores for a gathered tile, whose column c is key keys[c] and which
/// every row sees in full: the score hooks with each key's own distance, and
/// -inf past `cols`. dist: n floats of scratch.
template <class Arch>
void finish_gathered(float* s, std::int64_t n, std::int64_t cols, const attention_variant& var, float slope,
                     std::int64_t i, const std::int64_t* keys, float* dist) {
  using B = simd::fbatch<Arch>;
  constexpr int L = simd::lanes<Arch>;
  if (var.score.softcap > 0.0f || var.score.alibi_slopes) {
    const std::int64_t p = var.mask.position(i);
    for (std::int64_t c = 0; c < n; ++c) dist[c] = c < cols ? static_cast<float>(var.mask.key_position(keys[c]) - p) : 0.0f;
    for (std::int64_t c = 0; c < n; c += L)
      var.score.modify(B::load_aligned(s + c), slope, B::load_aligned(dist + c)).store_aligned(s + c);
  }
  std::fill(s + cols, s + n, -std::numeric_limits<float>::infinity());
}

/// Applies the variant's score hooks (softcap, ALiBi; scale is already in q) to
/// one row of raw scores, then sets masked keys and the padding past `cols` to
/// -inf. slope: the row's head's ALiBi slope.
template <class Arch>
void finish_scores(float* s, std::int64_t n, std::int64_t cols, const attention_variant& var, float slope,
                   std::int64_t i, std::int64_t j0, bool partial) {
  using B = simd::fbatch<Arch>;
  constexpr int L = simd::lanes<Arch>;
  constexpr float neg_inf = -std::numeric_limits<float>::infinity();
  if (var.score.softcap > 0.0f || var.score.alibi_slopes) {
    const B step = simd::lane_index<Arch>();
    const std::int64_t dist0 = var.mask.key_position(j0) - var.mask.position(i);  // key j0's distance after row i
    for (std::int64_t c = 0; c < n; c += L)
      var.score.modify(B::load_aligned(s + c), slope, B(static_cast<float>(dist0 + c)) + step).store_aligned(s + c);
  }
  std::int64_t last = cols - 1;
  if (partial) {
    const attention_mask::row_keys band = var.mask.band(i);
    last = std::min(last, band.last - j0);
    const std::int64_t first = std::max<std::int64_t>(0, band.first - j0);
    const std::int64_t sink_end = std::max<std::int64_t>(0, band.sink_end - j0);
    if (first > sink_end) std::fill(s + sink_end, s + std::min(first, cols), neg_inf);
    if (var.mask.bits)
      for (std::int64_t c = 0; c <= last; ++c)
        if (!var.mask.bit(i, j0 + c)) s[c] = neg_inf;
    if (var.mask.sparse.given()) hide_unselected(var.mask, i, j0, last + 1, s);
  }
  std::fill(s + std::clamp<std::int64_t>(last + 1, 0, n), s + n, neg_inf);
}

/// o and lse of one row from its accumulator and state; the sink logit joins the
/// denominator here. Returns the row's lse.
template <class TO>
float write_row(const float* acc, softmax_state st, float sink, TO* o, std::int64_t dv, float* lse) {
  float scale = 1.0f;
  if (sink != -std::numeric_limits<float>::infinity()) {
    scale = st.rescale(sink);
    st.l += std::exp(sink - st.m);
  }
  const float inv_l = st.l > 0.0f ? scale / st.l : 0.0f;
  for (std::int64_t x = 0; x < dv; ++x) o[x] = from_float<TO>(acc[x] * inv_l);
  if (lse) *lse = st.lse();
  return st.lse();
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
ATTNKIT_SIMD_END
