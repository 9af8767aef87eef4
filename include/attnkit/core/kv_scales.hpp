// kv_scales: the scales that turn a quantized K or V into values, carried
// beside its data (DESIGN §2). Value = to_float(stored) * scale.
//
//   int8: one scale per (row, KV head), fp32 or f16 (give rows or rows_f16),
//         laid out like the data without d: (b, hkv, skv) for strided K/V,
//         (num_pages, hkv, page_size) for paged K/V (a row's scale sits in the
//         same page and slot as the row).
//   fp8 (e4m3, e5m2): one fp32 scale per (sequence, KV head): heads (b, hkv);
//         a stride of 0 on b gives every sequence the same per-head scales.
//
// Every scale a call reads must be finite and > 0 (checked before any write).
// Float, half and bfloat16 K/V take no scales.
#pragma once

#include <cstdint>

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct kv_scales {
  tensor_view<const float, 3> rows;     // int8, fp32 scales: (b, hkv, skv) or paged (num_pages, hkv, page_size)
  tensor_view<const half, 3> rows_f16;  // int8, f16 scales: the same shape; give rows or rows_f16
  tensor_view<const float, 2> heads;    // fp8: (b, hkv)

  bool empty() const { return !rows.data_handle() && !rows_f16.data_handle() && !heads.data_handle(); }

  /// The int8 scale at (i, h, j) of the row layout (b, h, skv) or (page, h, slot).
  float row(std::int64_t i, std::int64_t h, std::int64_t j) const {
    return rows.data_handle() ? rows(i, h, j) : to_float(rows_f16(i, h, j));
  }
};

ATTNKIT_END_NAMESPACE
