// flash_attention on the cuda backend: the same calls and arguments as the CPU
// backends, with views over device memory and attnkit::cuda{stream, scratch}.
//
//   attnkit::flash_attention(q, k, v, o, params, lse, attnkit::cuda{stream, ws});
//
// Q, K and V hold half or bfloat16 (one type for all three), O float, half or
// bfloat16; arithmetic and accumulation are fp32, and the probabilities that
// multiply V are rounded to the input type (as every tensor-core flash kernel
// does). d and dv are multiples of 8 up to 256; rows start 16-byte aligned.
// Strided or paged K/V, ragged query rows (cu_seqlens_q), positions, every
// mask of the variant (causal, windows, sinks, softcap, ALiBi, sink logits,
// bitmask, block-sparse layout), GQA, lse and key weights (a second pass,
// flash_cuda/key_weights.cuh). Quantized K/V is CPU-only for now (a
// compile-time error).
//
// Checks: shapes, strides, alignment and scalar params on the host, before
// anything is queued (DESIGN §8); contents of device arrays (cu_seqlens_q,
// page tables, positions, layouts, per-head params) are not read on the host:
// the caller keeps them valid (the CPU backends check the same arrays in host
// memory, O(n), if an engine wants to validate a copy in a debug build).
// The call allocates nothing and does not synchronize: it queues one kernel
// (prefill) or two (decode: splits, then their merge), plus the key-weights
// pass when asked, on the stream, so it can be captured in a CUDA graph.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/check_args.hpp"
#include "attnkit/attention/flash_cuda/kernels.cuh"
#include "attnkit/attention/flash_cuda/key_weights.cuh"
#include "attnkit/attention/flash_cuda/problem.cuh"
#include "attnkit/attention/flash_front.hpp"
#include "attnkit/attention/validate.hpp"
#include "attnkit/attention/variant.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/view_checks.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// Where a cuda flash call goes: decode (a GQA group's rows fit one MMA tile)
/// with its splits, or prefill.
struct cuda_plan {
  bool decode = false;
  std::int64_t splits = 1, chunk = 0;
  std::int64_t lse_floats = 0;  // key weights without a caller's lse: the lse lives in the workspace
  std::int64_t partial_floats = 0;
  std::size_t bytes = 0;  // workspace: 256-byte aligned lse, then the decode partials
};

template <class T>
void check_cuda_rows(const char* fn, const char* name, const T* data, const std::int64_t* strides, int n,
                     std::int64_t cols) {
  ATTNKIT_CHECK(reinterpret_cast<std::uintptr_t>(data) % 16 == 0, fn, ": ", name,
                "'s data must be 16-byte aligned on the cuda backend");
  for (int r = 0; r < n; ++r)
    ATTNKIT_CHECK(strides[r] % 8 == 0, fn, ": ", name, ".stride(", r,
                  ") must be a multiple of 8 elements (16-byte rows) on the cuda backend, got ", strides[r]);
  ATTNKIT_CHECK(cols % 8 == 0 && cols <= 256, fn, ": ", name,
                "'s last extent must be a multiple of 8 and at most 256 on the cuda backend, got ", cols);
}

template <class T>
cuda_kv_rows<T> cuda_kv_of(const char* fn, const char* name, const kv_input<const T>& kv) {
  cuda_kv_rows<T> r;
  if (kv.is_paged) {
    const auto& pg = kv.paged.pages;
    r.base = pg.data_handle();
    for (int x = 0; x < 3; ++x) r.stride[x] = pg.stride(x);
    r.page_size = pg.extent(2);
    r.indptr = kv.paged.table.indptr.data_handle();
    r.indices = kv.paged.table.indices.data_handle();
    r.last_page_len = kv.paged.table.last_page_len.data_handle();
    ATTNKIT_CHECK(kv.paged.table.indptr.stride(0) == 1 && kv.paged.table.indices.stride(0) == 1 &&
                      kv.paged.table.last_page_len.stride(0) == 1,
                  fn, ": ", name, ".table's arrays must be contiguous on the cuda backend");
    check_cuda_rows(fn, name, r.base, r.stride, 3, pg.extent(3));
  } else {
    const auto& t = kv.strided;
    r.base = t.data_handle();
    for (int x = 0; x < 3; ++x) r.stride[x] = t.stride(x);
    r.skv = t.extent(2);
    check_cuda_rows(fn, name, r.base, r.stride, 3, t.extent(3));
  }
  return r;
}

template <class TQ, class TK, class TV, class TO>
void check_cuda_types() {
  using T = std::remove_const_t<TQ>;
  static_assert(std::is_same_v<T, half> || std::is_same_v<T, bfloat16>,
                "flash_attention on attnkit::cuda: q, k and v must hold half or bfloat16");
  static_assert(std::is_same_v<T, std::remove_const_t<TK>> && std::is_same_v<T, std::remove_const_t<TV>>,
                "flash_attention on attnkit::cuda: q, k and v must hold the same type");
  static_assert(std::is_same_v<TO, float> || std::is_same_v<TO, half> || std::is_same_v<TO, bfloat16>,
                "flash_attention on attnkit::cuda: o must hold float, half or bfloat16");
}

/// The metadata checks of a cuda call and the problem the kernels read.
template <class TQ, class TK, class TV, class TO>
auto make_cuda_problem(const char* fn, const attention_args<TQ, TK, TV, TO>& a, bool want_o) {
  check_cuda_types<TQ, TK, TV, TO>();
  using T = std::remove_const_t<TQ>;
  cuda_problem<T, TO> p;
  check_view(fn, "q", a.q, true);
  const bool ragged = is_given(a.cu_seqlens_q);
  ATTNKIT_CHECK(a.k.is_paged == a.v.is_paged, fn, ": k and v must both be paged or both be strided");
  if (ragged) {
    check_view(fn, "cu_seqlens_q", a.cu_seqlens_q, false);
    ATTNKIT_CHECK(a.cu_seqlens_q.extent(0) >= 2 && a.cu_seqlens_q.stride(0) == 1, fn,
                  ": cu_seqlens_q must hold b + 1 >= 2 contiguous entries on the cuda backend");
    p.cu = a.cu_seqlens_q.data_handle();
    p.inner = a.cu_seqlens_q.extent(0) - 1;
  }
  p.count = ragged ? a.q.extent(0) * p.inner : a.q.extent(0);
  p.sq = ragged ? 0 : a.q.extent(2);
  p.hq = a.q.extent(1);
  p.d = a.q.extent(3);
  const kv_input<const T> k = a.k, v = a.v;
  p.k = cuda_kv_of<T>(fn, "k", k);
  p.v = cuda_kv_of<T>(fn, "v", v);
  if (k.is_paged) {
    for (const auto* t : {&k.paged.table, &v.paged.table})
      ATTNKIT_CHECK(t->indptr.extent(0) == p.count + 1 && t->last_page_len.extent(0) == p.count, fn,
                    ": k.table and v.table must hold ", p.count, " sequences (indptr ", p.count + 1,
                    " entries, last_page_len ", p.count, ")");
    ATTNKIT_CHECK(k.paged.page_size() >= 1, fn, ": k.pages.extent(2) (page_size) must be >= 1");
    p.hkv = k.paged.heads();
    p.dv = v.paged.dim();
    ATTNKIT_CHECK(v.paged.heads() == p.hkv && v.paged.page_size() == k.paged.page_size(), fn,
                  ": v.pages must have k.pages' heads and page size");
    ATTNKIT_CHECK(k.paged.dim() == p.d, fn, ": k.pages.extent(3) (d) must equal q.extent(3) = ", p.d);
  } else {
    check_view(fn, "k", k.strided, true);
    check_view(fn, "v", v.strided, true);
    for (int r = 0; r < 3; ++r)
      ATTNKIT_CHECK(v.strided.extent(r) == k.strided.extent(r), fn, ": v.extent(", r, ") must equal k.extent(", r,
                    ") = ", k.strided.extent(r));
    check_extent(fn, "k", k.strided, 0, "b", p.count, ragged ? "the number of sequences" : "q.extent(0)");
    check_extent(fn, "k", k.strided, 3, "d", p.d, "q.extent(3)");
    p.hkv = k.strided.extent(1);
    p.dv = v.strided.extent(3);
  }
  check_heads(fn, p.hq, p.hkv, "hkv");
  check_head_dims(fn, p.d, p.dv);
  check_out_like_q(fn, a.q, a.o, a.lse, p.dv, want_o);
  const std::int64_t qs[3] = {a.q.stride(0), a.q.stride(1), a.q.stride(2)};
  check_cuda_rows(fn, "q", a.q.data_handle(), qs, 3, p.d);
  p.q = {a.q.data_handle(), {a.q.stride(0), a.q.stride(1), a.q.stride(2)}};
  p.o = {a.o.data_handle(), {a.o.stride(0), a.o.stride(1), a.o.stride(2)}};
  p.lse = {a.lse.data_handle(), {a.lse.stride(0), a.lse.stride(1), a.lse.stride(2)}};
  for (const auto* pos : {&a.q_pos, &a.k_pos})
    if (is_given(*pos)) check_extent(fn, pos == &a.q_pos ? "q_pos" : "k_pos", *pos, 0, "b", p.count, "sequences");
  if (is_given(a.q_pos)) p.q_pos = a.q_pos.data_handle(), p.q_pos_stride = a.q_pos.stride(0);
  if (is_given(a.k_pos)) p.k_pos = a.k_pos.data_handle(), p.k_pos_stride = a.k_pos.stride(0);

  const attention_params& pr = a.params;
  ATTNKIT_CHECK(!pr.scale || (std::isfinite(*pr.scale) && *pr.scale > 0.0f), fn,
                ": params.scale must be finite and > 0");
  ATTNKIT_CHECK(pr.window_left >= 0 && pr.window_right >= 0 && pr.sinks >= 0, fn,
                ": params.window_left, window_right and sinks must be >= 0");
  ATTNKIT_CHECK(std::isfinite(pr.softcap) && pr.softcap >= 0.0f, fn, ": params.softcap must be finite and >= 0");
  for (const auto* ph : {&pr.alibi_slopes, &pr.sink_logits})
    if (is_given(*ph)) check_extent(fn, "params' per-head array", *ph, 0, "hq", p.hq, "q.extent(1)");
  const attention_variant var = make_variant(pr, sequence_span{}, p.d);
  p.left = var.mask.left, p.right = var.mask.right, p.sinks = var.mask.sinks;
  p.score = var.score;
  p.normalizer = var.normalizer;

  if (is_given(a.mask.bits)) {
    const auto& bits = a.mask.bits;
    check_view(fn, "mask.bits", bits, true);
    ATTNKIT_CHECK(bits.extent(0) == 1 || bits.extent(0) == p.hq, fn, ": mask.bits.extent(0) must be 1 or hq");
    check_extent(fn, "mask.bits", bits, 1, "rows", ragged ? a.q.extent(2) : p.count * p.sq, "the query rows");
    p.bits = bits.data_handle();
    p.bits_stride[0] = bits.extent(0) > 1 ? bits.stride(0) : 0;
    p.bits_stride[1] = bits.stride(1);
  }
  if (a.sparse.given()) {
    const block_sparse_layout& l = a.sparse;
    ATTNKIT_CHECK(l.block_k >= 1 && l.head_group >= 1 && (p.hq / p.hkv) % l.head_group == 0, fn,
                  ": sparse.block_k must be >= 1 and sparse.head_group divide hq / hkv");
    check_view(fn, "sparse.indptr", l.indptr, false);
    check_extent(fn, "sparse.indptr", l.indptr, 0, "b", p.count, "the number of sequences");
    check_extent(fn, "sparse.indptr", l.indptr, 1, "hq / head_group", p.hq / l.head_group, "hq / sparse.head_group");
    p.sparse_indptr = l.indptr.data_handle();
    for (int r = 0; r < 3; ++r) p.sparse_indptr_stride[r] = l.indptr.stride(r);
    p.sparse.indices = l.indices.data_handle();
    p.sparse.indices_stride = l.indices.stride(0);
    p.sparse.block_q = l.block_q, p.sparse.block_k = l.block_k;
    p.sparse.sinks = l.sinks, p.sparse.window = l.window;
    p.sparse_head_group = l.head_group;
    // sparse.indptr is set per (sequence, head) on the device; a non-null value marks the layout as given.
    p.sparse.indptr = l.indptr.data_handle();
  }
  return p;
}

/// Decode when a GQA group's rows fit one MMA tile, every head of the group
/// sees the same keys, and the batch is not ragged; keys split so that about
/// 264 blocks run (two waves of a 132-SM card), at least 256 keys each.
/// lse_floats: the lse a key-weights pass needs when the caller asked for none.
template <class P>
cuda_plan plan_cuda(const P& p, std::int64_t keys_bound, const block_sparse_layout& sparse,
                    std::int64_t lse_floats) {
  cuda_plan plan;
  plan.lse_floats = lse_floats;
  const std::int64_t group = p.hq / p.hkv;
  const bool heads_differ = p.bits_stride[0] != 0 || (sparse.given() && sparse.head_group < group);
  plan.decode = !p.cu && group * p.sq <= cuda_decode_rows && !heads_differ && p.count > 0;
  if (plan.decode) {
    const std::int64_t units = p.count * p.hkv;
    std::int64_t splits = std::max<std::int64_t>(1, (264 + units - 1) / units);
    splits = std::max<std::int64_t>(1, std::min(splits, (keys_bound + 255) / 256));
    const std::int64_t per = (keys_bound + splits - 1) / splits;
    plan.chunk = std::max<std::int64_t>(1, (per + cuda_tile_keys - 1) / cuda_tile_keys) * cuda_tile_keys;
    plan.splits = std::max<std::int64_t>(1, (keys_bound + plan.chunk - 1) / plan.chunk);
    plan.partial_floats = units * plan.splits * cuda_decode_rows * (p.dv + 1);
  }
  if (plan.lse_floats + plan.partial_floats > 0)
    plan.bytes = static_cast<std::size_t>((plan.lse_floats + 64 + plan.partial_floats) * sizeof(float) + 256);
  return plan;
}

/// key_weights for the device, checked against the call (metadata only:
/// out must cover the longest sequence's keys, which the host cannot see when paged).
template <class TQ, class TK, class TV, class TO, class P>
cuda_key_weights make_cuda_key_weights(const char* fn, const attention_args<TQ, TK, TV, TO>& a, const P& p) {
  cuda_key_weights kw;
  if (!is_given(a.kw)) return kw;
  const auto& out = a.kw.out;
  check_view(fn, "key_weights.out", out, true);
  check_extent(fn, "key_weights.out", out, 0, "b", p.count, "the number of sequences");
  ATTNKIT_CHECK(out.extent(1) == p.hq || out.extent(1) == p.hkv, fn,
                ": key_weights.out.extent(1) must equal hq = ", p.hq, " or hkv = ", p.hkv, ", got ", out.extent(1));
  if (!a.k.is_paged) check_extent(fn, "key_weights.out", out, 2, "skv", p.k.skv, "the key count");
  kw.out = out.data_handle();
  kw.stride[0] = out.stride(0), kw.stride[1] = out.stride(1);
  kw.heads = out.extent(1), kw.keys = out.extent(2);
  if (is_given(a.kw.row_weights)) {
    check_view(fn, "key_weights.row_weights", a.kw.row_weights, false);
    check_extent(fn, "key_weights.row_weights", a.kw.row_weights, 0, "rows", p.cu ? a.q.extent(2) : p.sq,
                 "q.extent(2)");
    kw.row_weights = a.kw.row_weights.data_handle();
    kw.row_stride = a.kw.row_weights.stride(0);
  }
  return kw;
}

template <class T, class TO, int D>
void launch_flash_cuda(const char* fn, cuda_problem<T, TO> p, const cuda_plan& plan, const cuda& be,
                       const cuda_key_weights& kw, std::int64_t q_blocks, std::int64_t packed_rows) {
  cudaStream_t stream = be.stream;
  const std::int64_t z = p.cu ? q_blocks : p.count;  // the grid's third extent
  ATTNKIT_CHECK(p.hq <= 65535 && z <= 65535 && kw.heads <= 65535, fn,
                ": the cuda backend takes at most 65535 heads and ", p.cu ? "blocks of packed rows" : "sequences",
                " per call (grid limits), got hq = ", p.hq, " and ", z);
  // The workspace: the lse of a key-weights pass (when the caller asked for none), then the decode partials.
  auto base = (reinterpret_cast<std::uintptr_t>(be.scratch.data) + 255) / 256 * 256;
  if (plan.lse_floats > 0) {
    const std::int64_t rows = packed_rows;
    p.lse = {reinterpret_cast<float*>(base), {p.hq * rows, rows, 1}};
    base += (plan.lse_floats * sizeof(float) + 255) / 256 * 256;
  }
  if (packed_rows == 0) {
    // No query rows: nothing to attend; the key-weights pass below still writes its zeros.
  } else if (!plan.decode) {
    const int smem = cuda_smem_bytes<T, D>(cuda_block_rows);
    cudaFuncSetAttribute(flash_prefill_kernel<T, TO, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    const std::int64_t x = p.cu ? packed_rows / cuda_block_rows + p.inner + 1
                                : (p.sq + cuda_block_rows - 1) / cuda_block_rows;
    const dim3 grid(static_cast<unsigned>(x), static_cast<unsigned>(p.hq), static_cast<unsigned>(z));
    flash_prefill_kernel<T, TO, D><<<grid, cuda_threads, smem, stream>>>(p);
  } else {
    decode_partials part;
    const std::int64_t slots = p.count * p.hkv * plan.splits * cuda_decode_rows;
    part.lse = reinterpret_cast<float*>(base);
    part.o = part.lse + slots;
    part.splits = plan.splits;
    part.chunk = plan.chunk;
    const int smem = cuda_smem_bytes<T, D>(cuda_decode_rows);
    cudaFuncSetAttribute(flash_decode_kernel<T, TO, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    const dim3 grid(static_cast<unsigned>(plan.splits), static_cast<unsigned>(p.hkv), static_cast<unsigned>(p.count));
    flash_decode_kernel<T, TO, D><<<grid, cuda_threads, smem, stream>>>(p, part);
    const dim3 merge_grid(cuda_decode_rows, static_cast<unsigned>(p.hkv), static_cast<unsigned>(p.count));
    flash_decode_merge_kernel<T, TO><<<merge_grid, cuda_threads, 0, stream>>>(p, part);
  }
  if (kw.heads > 0 && kw.keys > 0 && p.count > 0) {
    const int smem = cuda_key_weights_smem_bytes<T, D>();
    cudaFuncSetAttribute(flash_key_weights_kernel<T, TO, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    const dim3 grid(static_cast<unsigned>((kw.keys + cuda_tile_keys - 1) / cuda_tile_keys),
                    static_cast<unsigned>(kw.heads), static_cast<unsigned>(p.count));
    flash_key_weights_kernel<T, TO, D><<<grid, cuda_threads, smem, stream>>>(p, kw);
  }
  const cudaError_t e = cudaGetLastError();
  ATTNKIT_CHECK(e == cudaSuccess, fn, ": kernel launch failed: ", cudaGetErrorString(e));
}

}  // namespace detail

namespace detail {
/// The plan of a cuda call: its split-KV shape and workspace.
template <class TQ, class TK, class TV, class TO, class P>
cuda_plan plan_cuda_call(const attention_args<TQ, TK, TV, TO>& a, const P& p) {
  const bool scratch_lse = is_given(a.kw) && !is_given(a.lse);
  const std::int64_t lse_floats = scratch_lse ? a.q.extent(0) * a.q.extent(1) * a.q.extent(2) : 0;
  const std::int64_t keys_bound = a.k.is_paged ? a.k.paged.pages.extent(0) * a.k.paged.page_size()
                                               : a.k.strided.extent(2);
  return plan_cuda(p, keys_bound, a.sparse, lse_floats);
}
}  // namespace detail

/// flash_attention on the GPU (see the top of this file for what it takes).
template <class TQ, class TK, class TV, class TO>
void flash_attention(const attention_args<TQ, TK, TV, TO>& a, const cuda& backend) {
  constexpr const char* fn = "flash_attention";
  const auto p = detail::make_cuda_problem(fn, a, true);
  const detail::cuda_key_weights kw = detail::make_cuda_key_weights(fn, a, p);
  const detail::cuda_plan plan = detail::plan_cuda_call(a, p);
  if (plan.bytes > 0) {
    ATTNKIT_CHECK(backend.scratch.data != nullptr && backend.scratch.bytes >= plan.bytes, fn,
                  ": backend.scratch must hold flash_attention_workspace_size = ", plan.bytes, " bytes, got ",
                  backend.scratch.bytes);
  }
  if (a.q.extent(0) == 0 || a.q.extent(1) == 0) return;
  using T = std::remove_const_t<TQ>;
  const std::int64_t widest = std::max(p.d, p.dv);
  const std::int64_t packed = a.q.extent(2);
  if (widest <= 64)
    detail::launch_flash_cuda<T, TO, 64>(fn, p, plan, backend, kw, a.q.extent(0), packed);
  else if (widest <= 128)
    detail::launch_flash_cuda<T, TO, 128>(fn, p, plan, backend, kw, a.q.extent(0), packed);
  else
    detail::launch_flash_cuda<T, TO, 256>(fn, p, plan, backend, kw, a.q.extent(0), packed);
}

/// Device bytes backend.scratch must hold for flash_attention(a, backend): 0
/// for prefill; the split partials for decode; the lse of the key-weights
/// pass when key weights are requested without an lse.
template <class TQ, class TK, class TV, class TO>
std::size_t flash_attention_workspace_size(const attention_args<TQ, TK, TV, TO>& a, const cuda&) {
  constexpr const char* fn = "flash_attention_workspace_size";
  const auto p = detail::make_cuda_problem(fn, a, false);
  (void)detail::make_cuda_key_weights(fn, a, p);
  return detail::plan_cuda_call(a, p).bytes;
}

/// Device bytes that cover every flash_attention call within `limits` on the
/// cuda backend: an engine allocates this once. The decode partials are at
/// most (b hkv + 264) x 16 rows x (dv + 1) floats (plan_cuda's splits keep
/// b hkv x splits under b hkv + 264), plus the lse when key weights are asked.
inline std::size_t flash_attention_workspace_bound(const attention_limits& limits, const cuda&) {
  const attention_shape s = detail::check_limits("flash_attention_workspace_bound", limits);
  const std::int64_t lse = limits.key_weights ? s.b * s.hq * s.sq : 0;
  const std::int64_t partial = (s.b * s.hkv + 264) * detail::cuda_decode_rows * (s.dv + 1);
  return static_cast<std::size_t>((lse + 64 + partial) * sizeof(float) + 256);
}

ATTNKIT_END_NAMESPACE
