// One flash_attention call as the cuda kernels read it: raw device pointers
// and strides, trivially copyable, built on the host from attention_args
// (make_problem) and passed to every kernel by value. The per-sequence
// questions the CPU answers with attention_batch (schedule.hpp) — rows, keys,
// positions, the variant of a head — are answered here on the device, by the
// same attention_mask and score_modifier hooks (variant.hpp).
#pragma once

#include <cstdint>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/variant.hpp"
#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// K or V rows on the device: strided (b, hkv, skv, d) or paged.
template <class T>
struct cuda_kv_rows {
  const T* base = nullptr;       // strided data or the page pool
  std::int64_t stride[3] = {};   // strided: b, h, j; paged: page, h, slot
  std::int64_t skv = 0;          // strided: keys of every sequence
  std::int64_t page_size = 0;    // > 0: paged
  const std::int32_t* indptr = nullptr;
  const std::int32_t* indices = nullptr;
  const std::int32_t* last_page_len = nullptr;

  __device__ std::int64_t length(std::int64_t b) const {
    if (page_size == 0) return skv;
    const std::int64_t n = indptr[b + 1] - indptr[b];
    return n == 0 ? 0 : (n - 1) * page_size + last_page_len[b];
  }
  /// Row j of head h of sequence b: d contiguous elements.
  __device__ const T* row(std::int64_t b, std::int64_t h, std::int64_t j) const {
    if (page_size == 0) return base + b * stride[0] + h * stride[1] + j * stride[2];
    const std::int64_t page = indices[indptr[b] + j / page_size];
    return base + page * stride[0] + h * stride[1] + (j % page_size) * stride[2];
  }
};

/// A (b, h, s) or (b, h, s, d) device tensor: pointer and the three outer strides.
template <class T>
struct cuda_rows {
  T* data = nullptr;
  std::int64_t stride[3] = {};
  __device__ T* at(std::int64_t b, std::int64_t h, std::int64_t i) const {
    return data + b * stride[0] + h * stride[1] + i * stride[2];
  }
};

template <class T, class TO>
struct cuda_problem {
  cuda_rows<const T> q;    // (b, hq, sq, d); ragged: (blocks, hq, total, d)
  cuda_rows<TO> o;         // like q, dv columns
  cuda_rows<float> lse;    // like q without d; data null: not returned
  cuda_kv_rows<T> k, v;
  std::int64_t count = 0, hq = 0, hkv = 0, d = 0, dv = 0;
  std::int64_t sq = 0;                    // rows per sequence when not ragged
  const std::int64_t* cu = nullptr;       // (inner + 1) ragged rows; null: uniform
  std::int64_t inner = 0;
  const std::int64_t* q_pos = nullptr;    // (count); null: bottom-right
  std::int64_t q_pos_stride = 1;
  const std::int64_t* k_pos = nullptr;    // (count); null: 0
  std::int64_t k_pos_stride = 1;
  std::int64_t left = attention_mask::far, right = attention_mask::far, sinks = 0;  // make_variant's band
  score_modifier score;
  sink_normalizer normalizer;
  const std::uint8_t* bits = nullptr;     // custom_mask; null: none
  std::int64_t bits_stride[2] = {};       // head (0 when shared), row
  const std::int64_t* sparse_indptr = nullptr;  // block_sparse_layout; null: none
  std::int64_t sparse_indptr_stride[3] = {};
  sparse_blocks sparse;                   // the layout's scalars and indices
  std::int64_t sparse_head_group = 1;

  __device__ std::int64_t rows(std::int64_t b) const {
    return cu ? cu[b % inner + 1] - cu[b % inner] : sq;
  }
  __device__ std::int64_t q_batch(std::int64_t b) const { return cu ? b / inner : b; }
  __device__ std::int64_t row0(std::int64_t b) const { return cu ? cu[b % inner] : 0; }

  __device__ sequence_span span(std::int64_t b) const {
    const std::int64_t n = rows(b), skv = k.length(b);
    const std::int64_t kp = k_pos ? k_pos[b * k_pos_stride] : 0;
    return {n, skv, q_pos ? q_pos[b * q_pos_stride] : kp + skv - n, kp};
  }

  /// The mask of query head h of sequence b (variant.hpp's hooks, on the device).
  __device__ attention_mask mask(std::int64_t b, std::int64_t h) const {
    attention_mask m;
    m.span = span(b);
    m.left = left;
    m.right = right;
    m.sinks = sinks;
    if (bits) {
      m.bits = bits + h * bits_stride[0] + (cu ? cu[b % inner] : b * sq) * bits_stride[1];
      m.bits_row = bits_stride[1];
    }
    if (sparse_indptr) {
      m.sparse = sparse;
      m.sparse.indptr = sparse_indptr + b * sparse_indptr_stride[0] + (h / sparse_head_group) * sparse_indptr_stride[1];
      m.sparse.indptr_stride = sparse_indptr_stride[2];
    }
    return m;
  }
};

}  // namespace detail
ATTNKIT_END_NAMESPACE
