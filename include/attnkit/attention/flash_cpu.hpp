// flash_attention on the cpu<Arch> backend: the reference algorithm of
// flash.hpp, laid out for SIMD registers and caches.
//
// Prefill (many query rows per KV head): each KV head's keys are packed once,
// transposed into fp32 panels kt (d, kv_tile), so that a q_tile x kv_tile block
// of scores is a register-blocked product (simd::qk_tile). Values are read in
// place when they are fp32 rows of whole registers, else packed to fp32 too.
// Work items are (head, query block); each runs the online softmax over the
// tiles its mask leaves non-empty.
//
// Decode (at most 16 query rows per KV head, e.g. sq = 1 with GQA): the query
// rows of a GQA group go together, so each key and value is read once per
// group. The keys of a (batch, KV head) are split into chunks that run in
// parallel; each writes a partial (acc, m, l) and a final pass merges them in
// chunk order, so results are identical run to run for a given concurrency.
//
// Neither path allocates anything proportional to sq x skv; all scratch comes
// from one workspace (flash_attention_workspace_size), lent by the caller or
// allocated once per call.
//
// The parts live in flash_cpu/: plan.hpp (sizes, scratch, per-row finishing),
// prefill.hpp, decode.hpp and key_weights.hpp; this file checks calls and runs them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "attnkit/attention/flash_cpu/decode.hpp"
#include "attnkit/attention/flash_cpu/plan.hpp"
#include "attnkit/attention/flash_cpu/prefill.hpp"
#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/paged.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// Runs a validated call: plans, takes the scratch, picks prefill or decode.
template <class Arch, class TQ, class KS, class VS, class TO>
void flash_cpu(const char* fn, const attention_shape& s, const flash_request& req, const tensor_view<TQ, 4>& q,
               const KS& k, const VS& v, const tensor_view<TO, 4>& o, const attention_params& params,
               tensor_view<float, 3> lse, const key_weights& kw, const cpu<Arch>& backend) {
  const flash_cpu_plan<Arch> plan(fn, s, backend.exec.concurrency(), req);
  if (plan.empty) {  // no query row: no key received any weight
    for (std::int64_t b = 0; plan.weights && s.skv > 0 && b < s.b; ++b)
      for (std::int64_t w = 0; w < kw.out.extent(1); ++w) std::fill_n(&kw.out(b, w, 0), s.skv, 0.0f);
    return;
  }
  scratch_arena arena(fn, backend.scratch, plan.bytes());
  if (plan.own_lse) lse = tensor_view<float, 3>(arena.take(plan.lse_floats()), {s.b, s.hq, s.sq});
  if (plan.decode)
    flash_decode(plan, q, k, v, o, params, lse, kw, backend.exec, arena);
  else
    flash_prefill(plan, q, k, v, o, params, lse, kw, backend.exec, arena);
}

template <class TV>
bool values_in_place(const tensor_view<TV, 4>& v) {
  return std::is_same_v<std::remove_const_t<TV>, float> && (v.extent(3) <= 1 || v.stride(3) == 1);
}

inline flash_request make_request(bool values_in_place, const tensor_view<float, 3>& lse, const key_weights& kw) {
  return flash_request{values_in_place, true, is_given(kw), is_given(lse)};
}

/// The checks of paged q, k, v; returns their shape with skv the longest
/// sequence, and the shortest in `shortest`.
template <class TQ, class TK, class TV>
attention_shape check_paged_qkv(const char* fn, const tensor_view<TQ, 4>& q, const paged_kv<TK>& k,
                                const paged_kv<TV>& v, std::int64_t& shortest) {
  check_view(fn, "q", q, true);
  check_paged(fn, "k", k);
  check_paged(fn, "v", v);
  attention_shape s{q.extent(0), q.extent(1), k.heads(), q.extent(2), 0, q.extent(3), v.dim()};
  ATTNKIT_CHECK(k.table.batch() == s.b, fn, ": k.table has ", k.table.batch(), " sequences, q.extent(0) (b) = ",
                s.b);
  ATTNKIT_CHECK(v.table.batch() == s.b, fn, ": v.table has ", v.table.batch(), " sequences, q.extent(0) (b) = ",
                s.b);
  ATTNKIT_CHECK(v.heads() == s.hkv, fn, ": v.pages.extent(1) (hkv) must equal k.pages.extent(1) = ", s.hkv,
                ", got ", v.heads());
  check_heads(fn, s.hq, s.hkv, "k.pages.extent(1)");
  ATTNKIT_CHECK(k.dim() == s.d, fn, ": k.pages.extent(3) (d) must equal q.extent(3) = ", s.d, ", got ", k.dim());
  check_head_dims(fn, s.d, s.dv);
  shortest = s.b > 0 ? k.length(0) : 0;
  for (std::int64_t b = 0; b < s.b; ++b) {
    ATTNKIT_CHECK(k.length(b) == v.length(b), fn, ": sequence ", b, " has ", k.length(b), " keys but ",
                  v.length(b), " values");
    s.skv = std::max(s.skv, k.length(b));
    shortest = std::min(shortest, k.length(b));
  }
  return s;
}

/// Every check of a paged call; returns its shape, with skv the longest sequence.
template <class TQ, class TK, class TV, class TO>
attention_shape check_paged_call(const char* fn, const tensor_view<TQ, 4>& q, const paged_kv<TK>& k,
                                 const paged_kv<TV>& v, const tensor_view<TO, 4>& o, const attention_params& params,
                                 const tensor_view<float, 3>& lse) {
  static_assert(attention_types_ok<TQ, TK, TV, TO>, "q, k, v, o must hold float, half or bfloat16 (o non-const)");
  std::int64_t shortest = 0;
  const attention_shape s = check_paged_qkv(fn, q, k, v, shortest);
  check_output(fn, o, s, "v.pages.extent(3)");
  attention_shape params_shape = s;
  params_shape.skv = shortest;  // sinks must exist in every sequence
  check_params(fn, params, params_shape);
  check_lse(fn, lse, s);
  return s;
}

}  // namespace detail

/// flash_attention on the SIMD CPU backend; same shapes and contract as the
/// reference backend. key_weights (key_weights.hpp), when given, receives the
/// attention each key got, from this same call.
template <class Arch, class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const attention_params& params, tensor_view<float, 3> lse, const key_weights& kw,
                     const cpu<Arch>& backend) {
  constexpr const char* fn = "flash_attention";
  const attention_shape s = detail::check_attention_call(fn, q, k, v, o, params, lse);
  detail::check_key_weights(fn, kw, s);
  detail::flash_cpu(fn, s, detail::make_request(detail::values_in_place(v), lse, kw), q, detail::strided_kv<TK>{k},
                    detail::strided_kv<TV>{v}, o, params, lse, kw, backend);
}

template <class Arch, class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v, tensor_view<TO, 4> o,
                     const attention_params& params, tensor_view<float, 3> lse, const cpu<Arch>& backend) {
  flash_attention(q, k, v, o, params, lse, key_weights{}, backend);
}

/// flash_attention over a paged KV cache: sequence b attends to its own
/// k.length(b) keys (bottom-right aligned masks use that length). Bit for bit
/// the result of the same keys and values stored contiguously. key_weights.out
/// has skv = the longest sequence; entries past a sequence's length get 0.
template <class Arch, class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q,  // (b, hq, sq, d)
                     const paged_kv<TK>& k, const paged_kv<TV>& v,
                     tensor_view<TO, 4> o,  // (b, hq, sq, dv)
                     const attention_params& params, tensor_view<float, 3> lse,  // (b, hq, sq) or empty
                     const key_weights& kw, const cpu<Arch>& backend) {
  constexpr const char* fn = "flash_attention";
  const attention_shape s = detail::check_paged_call(fn, q, k, v, o, params, lse);
  detail::check_key_weights(fn, kw, s);
  detail::flash_cpu(fn, s, detail::make_request(false, lse, kw), q, k, v, o, params, lse, kw, backend);
}

template <class Arch, class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, const paged_kv<TK>& k, const paged_kv<TV>& v, tensor_view<TO, 4> o,
                     const attention_params& params, tensor_view<float, 3> lse, const cpu<Arch>& backend) {
  flash_attention(q, k, v, o, params, lse, key_weights{}, backend);
}

/// The paged call on cpu<xsimd::default_arch>.
template <class TQ, class TK, class TV, class TO>
void flash_attention(tensor_view<TQ, 4> q, const paged_kv<TK>& k, const paged_kv<TV>& v, tensor_view<TO, 4> o,
                     const attention_params& params = {}, tensor_view<float, 3> lse = {},
                     const key_weights& kw = {}) {
  flash_attention(q, k, v, o, params, lse, kw, cpu<xsimd::default_arch>{});
}

/// The second pass of key_weights on its own (see the reference backend's
/// overload): K is packed once per KV head, then each (KV head, key tile) sums
/// its column of probabilities over the query rows that carry weight.
template <class Arch, class TQ, class TK>
void attention_key_weights(tensor_view<TQ, 4> q,  // (b, hq, sq, d)
                           tensor_view<TK, 4> k,  // (b, hkv, skv, d)
                           const attention_params& params,
                           tensor_view<const float, 3> lse,  // (b, hq, sq)
                           const key_weights& kw, const cpu<Arch>& backend) {
  constexpr const char* fn = "attention_key_weights";
  const attention_shape s = detail::check_key_weights_call(fn, q, k, params, lse, kw);
  // With output off the kernel only reads lse.
  const tensor_view<float, 3> lse_in(const_cast<float*>(lse.data_handle()), lse.extents(), lse.strides());
  detail::flash_cpu(fn, s, detail::flash_request{false, false, true, true}, q, detail::strided_kv<TK>{k},
                    detail::strided_kv<TK>{k}, tensor_view<float, 4>{}, params, lse_in, kw, backend);
}

/// Scratch bytes of flash_attention(q, k, v, o, params, lse, kw, backend). Lend at
/// least that much through backend.scratch and the call allocates nothing. It
/// depends on the shapes, v's element type, backend.exec.concurrency(), and
/// whether lse and key weights are requested (pass the same lse and kw). Checks
/// q, k, v, lse and kw as the call does.
template <class Arch, class TQ, class TK, class TV>
std::size_t flash_attention_workspace_size(tensor_view<TQ, 4> q, tensor_view<TK, 4> k, tensor_view<TV, 4> v,
                                           const cpu<Arch>& backend, tensor_view<float, 3> lse = {},
                                           const key_weights& kw = {}) {
  constexpr const char* fn = "flash_attention_workspace_size";
  const attention_shape s = detail::check_qkv(fn, q, k, v);
  detail::check_lse(fn, lse, s);
  detail::check_key_weights(fn, kw, s);
  const auto req = detail::make_request(detail::values_in_place(v), lse, kw);
  return detail::flash_cpu_plan<Arch>(fn, s, backend.exec.concurrency(), req).bytes();
}

/// Scratch bytes of the paged flash_attention call (for the current block tables).
template <class Arch, class TQ, class TK, class TV>
std::size_t flash_attention_workspace_size(tensor_view<TQ, 4> q, const paged_kv<TK>& k, const paged_kv<TV>& v,
                                           const cpu<Arch>& backend, tensor_view<float, 3> lse = {},
                                           const key_weights& kw = {}) {
  constexpr const char* fn = "flash_attention_workspace_size";
  std::int64_t shortest = 0;
  const attention_shape s = detail::check_paged_qkv(fn, q, k, v, shortest);
  detail::check_lse(fn, lse, s);
  detail::check_key_weights(fn, kw, s);
  return detail::flash_cpu_plan<Arch>(fn, s, backend.exec.concurrency(), detail::make_request(false, lse, kw)).bytes();
}

ATTNKIT_END_NAMESPACE

ATTNKIT_SIMD_END
