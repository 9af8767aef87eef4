// flash_attention on the cpu<Arch> backend: the reference algorithm of
// flash.hpp, laid out for SIMD registers and caches. A call is a schedule
// (schedule.hpp: the sequences, the keys each query block can see, the key
// tiles that cover them) run by one tile body per path: scores, the variant's
// hooks (variant.hpp), the online-softmax step, P.V.
//
// Each sequence takes one of two paths, chosen by its own rows:
// Prefill (more than 16 query rows per GQA group): the key tiles any of its
// rows can see are packed once per KV head, transposed into fp32 panels kt
// (d, kv_tile), so that a q_tile x kv_tile block of scores is a
// register-blocked product (simd::qk_tile). Values are read in place when they
// are fp32 rows of whole registers, else packed to fp32 too. Work items are
// (head, query block); each runs the tile body over the tiles its rows see.
//
// Decode (at most 16 query rows per group, e.g. sq = 1 with GQA): the query
// rows of a GQA group go together, so each key and value is read once per
// group. The keys the rows can see are split into chunks that run in
// parallel; each writes a partial (acc, m, l) and a final pass merges them in
// chunk order. The number of chunks depends on the sequence's length and the
// thread count only, so a sequence's result is the same bits whatever else is
// in the batch, and run to run for a given concurrency.
//
// Neither path allocates anything proportional to sq x skv; all scratch comes
// from one workspace (flash_attention_workspace_size, or the start-up bound
// flash_attention_workspace_bound), lent by the caller or allocated once per call.
//
// The parts live in flash_cpu/: plan.hpp (sizes, scratch, score hooks on
// registers, per-row finishing), prefill.hpp, decode.hpp and key_weights.hpp;
// this file runs checked calls.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/check_args.hpp"
#include "attnkit/attention/flash_cpu/decode.hpp"
#include "attnkit/attention/flash_cpu/plan.hpp"
#include "attnkit/attention/flash_cpu/prefill.hpp"
#include "attnkit/attention/flash_front.hpp"
#include "attnkit/attention/key_weights.hpp"
#include "attnkit/attention/params.hpp"
#include "attnkit/attention/schedule.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/workspace.hpp"

ATTNKIT_SIMD_BEGIN
ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// The plan of a checked call over keys KS (strided_kv or paged_rows).
template <class Arch, class KS>
flash_cpu_plan<Arch> plan_call(const char* fn, const checked_call& c, const KS& k, std::int64_t concurrency,
                               const flash_request& req) {
  return flash_cpu_plan<Arch>(
      fn, c.s, concurrency, req, [&](std::int64_t b) { return c.batch.rows(b); },
      [&](std::int64_t b) { return k.length(b); });
}

/// Runs a checked call: plans, takes the scratch, lists each path's sequences
/// (the schedule), and runs the decode and prefill paths over them.
template <class Arch, class TQ, class TO, class KS, class VS>
void flash_cpu(const char* fn, const checked_call& c, const flash_request& req, flash_io<TQ, TO> io, const KS& k,
               const VS& v, const cpu<Arch>& backend) {
  const flash_cpu_plan<Arch> plan = plan_call<Arch>(fn, c, k, backend.exec.concurrency(), req);
  const attention_shape& s = c.s;
  const auto no_weights = [&](std::int64_t b) {  // a sequence without query rows gave no key weight
    for (std::int64_t w = 0; plan.weights && io.kw.out.extent(2) > 0 && w < io.kw.out.extent(1); ++w)
      std::fill_n(&io.kw.out(b, w, 0), io.kw.out.extent(2), 0.0f);
  };
  if (plan.empty) {
    for (std::int64_t b = 0; b < s.b; ++b) no_weights(b);
    return;
  }
  scratch_arena arena(fn, backend.scratch, plan.bytes());
  const flash_scratch scratch(plan, arena);
  // Shaped like q: b * sq floats also cover q.extent(0) blocks of packed rows.
  if (plan.own_lse) io.lse = tensor_view<float, 3>(scratch.lse, {io.q.extent(0), s.hq, io.q.extent(2)});
  std::int64_t prefill = 0, decode = 0;
  scratch.first_chunk[0] = 0;
  for (std::int64_t b = 0; b < s.b; ++b) {
    if (c.batch.rows(b) == 0) {
      no_weights(b);
      continue;
    }
    if (plan.on_decode_path(c.batch.rows(b))) {
      scratch.decode_seqs[decode] = b;
      scratch.first_chunk[decode + 1] = scratch.first_chunk[decode] + s.hkv * plan.splits(k.length(b));
      ++decode;
    } else {
      scratch.prefill_seqs[prefill++] = b;
    }
  }
  if (plan.decode_seqs > 0) flash_decode(plan, io, k, v, scratch, backend.exec);
  if (plan.prefill_seqs > 0) flash_prefill(plan, io, k, v, scratch, backend.exec);
}

template <class TV>
bool values_in_place(const kv_input<TV>& v) {
  return std::is_same_v<std::remove_const_t<TV>, float> && !v.is_paged &&
         (v.strided.extent(3) <= 1 || v.strided.stride(3) == 1);
}

template <class TQ, class TK, class TV, class TO>
flash_request make_request(const attention_args<TQ, TK, TV, TO>& a) {
  return flash_request{values_in_place(a.v), true, is_given(a.kw), is_given(a.lse), a.sparse.given()};
}

}  // namespace detail

/// flash_attention on the SIMD CPU backend, for every input form of
/// attention_args; same contract as the reference backend (flash.hpp).
/// key_weights (key_weights.hpp), when given, come from this same call.
template <class Arch, class TQ, class TK, class TV, class TO>
void flash_attention(const attention_args<TQ, TK, TV, TO>& a, const cpu<Arch>& backend) {
  constexpr const char* fn = "flash_attention";
  const detail::checked_call c = detail::check_args(fn, a);
  const detail::flash_io<TQ, TO> io{a.q, a.o, a.lse, a.params, a.kw, c.batch};
  detail::with_kv_rows(a.k, a.v, [&](const auto& k, const auto& v) {
    detail::flash_cpu(fn, c, detail::make_request(a), io, k, v, backend);
  });
}

/// Scratch bytes of flash_attention(args, backend). Lend at least that much
/// through backend.scratch and the call allocates nothing. It depends on the
/// shapes, the sequences' rows and lengths, v's element type,
/// backend.exec.concurrency(), and whether lse and key weights are requested.
/// Checks the args as the call does (o may be empty).
template <class Arch, class TQ, class TK, class TV, class TO>
std::size_t flash_attention_workspace_size(const attention_args<TQ, TK, TV, TO>& a, const cpu<Arch>& backend) {
  constexpr const char* fn = "flash_attention_workspace_size";
  const detail::checked_call c = detail::check_args(fn, a, false);
  const auto req = detail::make_request(a);
  return detail::with_kv_rows(a.k, a.v, [&](const auto& k, const auto&) {
    return detail::plan_call<Arch>(fn, c, k, backend.exec.concurrency(), req).bytes();
  });
}

/// Scratch bytes that cover every flash_attention call within `limits` on this
/// backend (the same concurrency): an engine allocates this once at start-up.
template <class Arch>
std::size_t flash_attention_workspace_bound(const attention_limits& limits, const cpu<Arch>& backend) {
  constexpr const char* fn = "flash_attention_workspace_bound";
  const attention_shape s = detail::check_limits(fn, limits);
  const detail::flash_request req{false, true, limits.key_weights, !limits.key_weights, limits.sparse};
  return detail::flash_cpu_plan<Arch>::bound(fn, s, backend.exec.concurrency(), req).bytes();
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
  detail::checked_call c;
  c.s = detail::check_key_weights_call(fn, q, k, params, lse, kw);
  c.batch.count = c.s.b;
  c.batch.sq = c.s.sq;
  // With output off the kernel only reads lse.
  const tensor_view<float, 3> lse_in(const_cast<float*>(lse.data_handle()), lse.extents(), lse.strides());
  const detail::flash_io<TQ, float> io{q, {}, lse_in, params, kw, c.batch};
  detail::flash_cpu(fn, c, detail::flash_request{false, false, true, true, false}, io, detail::strided_kv<TK>{k, {}},
                    detail::strided_kv<TK>{k, {}}, backend);
}

ATTNKIT_END_NAMESPACE

ATTNKIT_SIMD_END
