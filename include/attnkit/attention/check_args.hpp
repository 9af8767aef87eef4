// The checks of an attention_args call (DESIGN §8), shared by every backend:
// metadata always, and the O(b) content checks of cu_seqlens_q, positions and
// block tables (and the O(keys) check of quantized K/V scales,
// check_scales.hpp), all before any output is written.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/check_scales.hpp"
#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/paged.hpp"
#include "attnkit/attention/schedule.hpp"
#include "attnkit/attention/sparse/check_layout.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// A checked call: its sequences, and its shape with b = sequences, sq = the most
/// rows of one sequence, skv = the most keys of one sequence.
struct checked_call {
  attention_shape s{};
  attention_batch batch;
  std::int64_t shortest = 0;  // the fewest keys of one sequence
};

/// Positions stay in [0, 2^61) so that differences of positions and window widths never overflow.
inline constexpr std::int64_t position_limit = std::int64_t{1} << 61;

/// The checks of paged k and v for b sequences; sets skv (longest) and shortest.
template <class TK, class TV>
void check_paged_kv(const char* fn, const paged_kv<TK>& k, const paged_kv<TV>& v, std::int64_t b,
                    attention_shape& s, std::int64_t& shortest) {
  check_paged(fn, "k", k);
  check_paged(fn, "v", v);
  ATTNKIT_CHECK(k.table.batch() == b, fn, ": k.table has ", k.table.batch(), " sequences, the queries hold ", b);
  ATTNKIT_CHECK(v.table.batch() == b, fn, ": v.table has ", v.table.batch(), " sequences, the queries hold ", b);
  ATTNKIT_CHECK(v.heads() == k.heads(), fn, ": v.pages.extent(1) (hkv) must equal k.pages.extent(1) = ", k.heads(),
                ", got ", v.heads());
  s.hkv = k.heads();
  s.dv = v.dim();
  check_heads(fn, s.hq, s.hkv, "k.pages.extent(1)");
  ATTNKIT_CHECK(k.dim() == s.d, fn, ": k.pages.extent(3) (d) must equal q.extent(3) = ", s.d, ", got ", k.dim());
  s.skv = 0;
  shortest = b > 0 ? k.length(0) : 0;
  for (std::int64_t i = 0; i < b; ++i) {
    ATTNKIT_CHECK(k.length(i) == v.length(i), fn, ": sequence ", i, " has ", k.length(i), " keys but ", v.length(i),
                  " values");
    s.skv = std::max(s.skv, k.length(i));
    shortest = std::min(shortest, k.length(i));
  }
}

/// cu_seqlens_q (b + 1): 0, non-decreasing, ending at the packed rows of q.
inline void check_cu_seqlens(const char* fn, const tensor_view<const std::int64_t, 1>& cu, std::int64_t total) {
  check_view(fn, "cu_seqlens_q", cu, false);
  ATTNKIT_CHECK(cu.extent(0) >= 1, fn, ": cu_seqlens_q must hold b + 1 >= 1 entries, got ", cu.extent(0));
  ATTNKIT_CHECK(cu(0) == 0, fn, ": cu_seqlens_q(0) must be 0, got ", cu(0));
  for (std::int64_t i = 1; i < cu.extent(0); ++i)
    ATTNKIT_CHECK(cu(i) >= cu(i - 1), fn, ": cu_seqlens_q must not decrease, but cu_seqlens_q(", i, ") = ", cu(i),
                  " < cu_seqlens_q(", i - 1, ") = ", cu(i - 1));
  ATTNKIT_CHECK(cu(cu.extent(0) - 1) == total, fn, ": cu_seqlens_q(b) = ", cu(cu.extent(0) - 1),
                " must equal q.extent(2) (the packed rows) = ", total);
}

/// Given positions: (b), each >= 0 with every row or key below 2^61.
inline void check_positions(const char* fn, const char* name, const tensor_view<const std::int64_t, 1>& pos,
                            std::int64_t b) {
  if (!is_given(pos)) return;
  check_view(fn, name, pos, false);
  check_extent(fn, name, pos, 0, "b", b, "the number of sequences");
  for (std::int64_t i = 0; i < b; ++i)
    ATTNKIT_CHECK(pos(i) >= 0 && pos(i) < position_limit, fn, ": ", name, "(", i, ") must be in [0, 2^61), got ",
                  pos(i));
}

/// Every sequence's rows and keys, at their positions, stay inside (-2^61, 2^61).
template <class Lengths>
void check_spans(const char* fn, const attention_batch& batch, const Lengths& length) {
  for (std::int64_t b = 0; b < batch.count; ++b) {
    const std::int64_t rows = batch.rows(b), keys = length(b);
    const std::int64_t kp = is_given(batch.k_pos) ? batch.k_pos(b) : 0;
    ATTNKIT_CHECK(keys < position_limit - kp, fn, ": sequence ", b, "'s keys reach position ", kp, " + ", keys,
                  ", past 2^61");
    const std::int64_t qp = is_given(batch.q_pos) ? batch.q_pos(b) : kp + keys - std::min(rows, position_limit);
    ATTNKIT_CHECK(qp > -position_limit && rows < position_limit - qp, fn, ": sequence ", b,
                  "'s query rows reach position ", qp, " + ", rows, ", outside (-2^61, 2^61)");
  }
}

/// The caller's bitmask against the call's heads, rows and longest sequence.
inline void check_custom_mask(const char* fn, const custom_mask& m, std::int64_t hq, std::int64_t rows,
                              std::int64_t skv) {
  if (!is_given(m.bits)) return;
  check_view(fn, "mask.bits", m.bits, true);
  ATTNKIT_CHECK(m.bits.extent(0) == 1 || m.bits.extent(0) == hq, fn,
                ": mask.bits.extent(0) must be 1 (all heads) or hq = ", hq, ", got ", m.bits.extent(0));
  check_extent(fn, "mask.bits", m.bits, 1, "rows", rows, "the query rows of the call");
  ATTNKIT_CHECK(m.bits.extent(2) >= (skv + 7) / 8, fn, ": mask.bits.extent(2) must hold ceil(skv / 8) = ",
                (skv + 7) / 8, " bytes for the longest sequence's ", skv, " keys, got ", m.bits.extent(2));
}

/// o (and lse) shaped like q, with dv columns.
template <class TQ, class TO>
void check_out_like_q(const char* fn, const tensor_view<TQ, 4>& q, const tensor_view<TO, 4>& o,
                      const tensor_view<float, 3>& lse, std::int64_t dv, bool want_o) {
  const char* names[] = {"b", "hq", "sq"};
  if (want_o) {
    check_view(fn, "o", o, true);
    for (std::size_t r = 0; r < 3; ++r) check_extent(fn, "o", o, r, names[r], q.extent(r), "q's");
    check_extent(fn, "o", o, 3, "dv", dv, "v's last extent");
  }
  if (!is_given(lse)) return;
  check_view(fn, "lse", lse, false);
  for (std::size_t r = 0; r < 3; ++r) check_extent(fn, "lse", lse, r, names[r], q.extent(r), "q's");
}

/// Every check of a flash call (want_o false: a workspace query, which takes no o).
template <class TQ, class TK, class TV, class TO>
checked_call check_args(const char* fn, const attention_args<TQ, TK, TV, TO>& a, bool want_o = true) {
  static_assert(is_element_type_v<std::remove_const_t<TQ>> && is_element_type_v<TO>,
                "q and o must hold float, half or bfloat16 (o non-const; quantized q or o is not supported)");
  static_assert(is_kv_type_v<std::remove_const_t<TK>> && is_kv_type_v<std::remove_const_t<TV>>,
                "k and v must hold float, half, bfloat16, int8, fp8_e4m3 or fp8_e5m2");
  checked_call c;
  attention_shape& s = c.s;
  check_view(fn, "q", a.q, true);
  const bool ragged = is_given(a.cu_seqlens_q);
  if (ragged) check_cu_seqlens(fn, a.cu_seqlens_q, a.q.extent(2));
  c.batch = batch_of(a);
  s.b = c.batch.count;
  s.hq = a.q.extent(1);
  s.d = a.q.extent(3);
  ATTNKIT_CHECK(a.k.is_paged == a.v.is_paged, fn, ": k and v must both be paged or both be strided");
  if (a.k.is_paged) {
    check_paged_kv(fn, a.k.paged, a.v.paged, s.b, s, c.shortest);
  } else {
    const tensor_view<TK, 4>& k = a.k.strided;
    const tensor_view<TV, 4>& v = a.v.strided;
    check_view(fn, "k", k, true);
    check_view(fn, "v", v, true);
    check_extent(fn, "k", k, 0, "b", s.b, ragged ? "the number of sequences" : "q.extent(0)");
    check_extent(fn, "v", v, 0, "b", s.b, ragged ? "the number of sequences" : "q.extent(0)");
    s.hkv = k.extent(1);
    check_extent(fn, "v", v, 1, "hkv", s.hkv, "k.extent(1)");
    check_heads(fn, s.hq, s.hkv, "k.extent(1)");
    s.skv = c.shortest = k.extent(2);
    check_extent(fn, "v", v, 2, "skv", s.skv, "k.extent(2)");
    check_extent(fn, "k", k, 3, "d", s.d, "q.extent(3)");
    s.dv = v.extent(3);
  }
  check_head_dims(fn, s.d, s.dv);
  check_kv_scales(fn, "k", a.k, s.b, s.hkv);
  check_kv_scales(fn, "v", a.v, s.b, s.hkv);
  check_out_like_q(fn, a.q, a.o, a.lse, s.dv, want_o);
  s.sq = 0;
  for (std::int64_t b = 0; b < s.b; ++b) s.sq = std::max(s.sq, c.batch.rows(b));
  check_positions(fn, "q_pos", a.q_pos, s.b);
  check_positions(fn, "k_pos", a.k_pos, s.b);
  const auto length = [&](std::int64_t b) { return a.k.is_paged ? a.k.paged.length(b) : s.skv; };
  check_spans(fn, c.batch, length);
  attention_shape params_shape = s;
  params_shape.skv = is_given(a.k_pos) ? position_limit - 1 : c.shortest;  // sinks are positions
  check_params(fn, a.params, params_shape);
  check_custom_mask(fn, a.mask, s.hq, ragged ? a.q.extent(2) : s.b * s.sq, s.skv);
  check_key_weights(fn, a.kw, s, ragged ? a.q.extent(2) : s.sq);
  check_layout(fn, a.sparse, c.batch, s.hq, s.hq / s.hkv, length);
  return c;
}

/// The checks of attention_limits; returns them as a shape.
inline attention_shape check_limits(const char* fn, const attention_limits& l) {
  const std::int64_t v[] = {l.b, l.hq, l.hkv, l.sq, l.skv, l.d, l.dv};
  const char* names[] = {"b", "hq", "hkv", "sq", "skv", "d", "dv"};
  for (int x = 0; x < 7; ++x)
    ATTNKIT_CHECK(v[x] >= 0 && v[x] < (std::int64_t{1} << 40), fn, ": limits.", names[x],
                  " must be in [0, 2^40), got ", v[x]);
  check_heads(fn, l.hq, l.hkv, "limits.hkv");
  check_head_dims(fn, l.d, l.dv);
  return {l.b, l.hq, l.hkv, l.sq, l.skv, l.d, l.dv};
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
