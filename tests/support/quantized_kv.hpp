// Test helpers for quantized K/V: an fp8 decoder written from the formats'
// definitions (not the library's), random inputs quantized with their scales,
// the values they stand for computed independently (what the fp64 oracle
// reads), and a shuffled paged copy of them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <type_traits>
#include <vector>

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/kv_scales.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/kv/quantize.hpp"
#include "support/paged_copy.hpp"

namespace attnkit::test {

/// The value of fp8 bits per the format's definition, in double (NaN for NaN codes).
template <class F8>
double fp8_value(std::uint8_t bits) {
  constexpr bool e4m3 = std::is_same_v<F8, fp8_e4m3>;
  const int E = e4m3 ? 4 : 5, M = e4m3 ? 3 : 2, bias = e4m3 ? 7 : 15;
  const int e = (bits >> M) & ((1 << E) - 1), m = bits & ((1 << M) - 1);
  const double sign = (bits & 0x80) ? -1.0 : 1.0;
  if (e4m3 && e == 15 && m == 7) return std::numeric_limits<double>::quiet_NaN();
  if (!e4m3 && e == 31) return m == 0 ? sign * std::numeric_limits<double>::infinity()
                                      : std::numeric_limits<double>::quiet_NaN();
  if (e == 0) return sign * std::ldexp(m, 1 - bias - M);
  return sign * std::ldexp((1 << M) + m, e - bias - M);
}

/// The value a stored element stands for before its scale: the integer, or the fp8 value.
template <class T>
double stored_value(T x) {
  if constexpr (std::is_same_v<T, std::int8_t>) {
    return x;
  } else {
    return fp8_value<T>(x.bits);
  }
}

/// A random K or V (b, h, s, d) quantized to T, with its scales and the fp32
/// values it stands for (fl(stored * scale), computed here in double and rounded once).
template <class T>
struct quantized_kv {
  tensor<T, 4> data;
  tensor<float, 3> rows{{1, 1, 1}};
  tensor<half, 3> rows_f16{{1, 1, 1}};
  tensor<float, 2> heads{{1, 1}};
  tensor<float, 4> values;  // what the oracle reads
  bool f16_scales = false;

  quantized_kv(std::int64_t b, std::int64_t h, std::int64_t s, std::int64_t d, std::mt19937_64& rng,
               bool f16 = false, float stddev = 1.0f)
      : data({b, h, s, d}), values({b, h, s, d}), f16_scales(f16) {
    tensor<float, 4> src({b, h, s, d});
    std::normal_distribution<float> dist(0.0f, stddev);
    for (std::int64_t i = 0; i < src.size(); ++i) src.data()[i] = dist(rng);
    if constexpr (std::is_same_v<T, std::int8_t>) {
      if (f16) {
        rows_f16 = tensor<half, 3>({b, h, s});
        quantize_int8(src.cview(), data.view(), rows_f16.view());
      } else {
        rows = tensor<float, 3>({b, h, s});
        quantize_int8(src.cview(), data.view(), rows.view());
      }
    } else {
      // A per-head scale near max|x| / largest finite, varied so each head differs.
      heads = tensor<float, 2>({b, h});
      std::uniform_real_distribution<float> jitter(0.5f, 2.0f);
      const float largest = std::is_same_v<T, fp8_e4m3> ? 448.0f : 57344.0f;
      for (std::int64_t i = 0; i < b * h; ++i) heads.data()[i] = 4.0f * stddev / largest * jitter(rng);
      quantize_fp8(src.cview(), data.view(), heads.cview());
    }
    for (std::int64_t bi = 0; bi < b; ++bi)
      for (std::int64_t hi = 0; hi < h; ++hi)
        for (std::int64_t j = 0; j < s; ++j)
          for (std::int64_t x = 0; x < d; ++x)
            values(bi, hi, j, x) = static_cast<float>(stored_value(data(bi, hi, j, x)) * scale(bi, hi, j));
  }

  double scale(std::int64_t b, std::int64_t h, std::int64_t j) const {
    if constexpr (std::is_same_v<T, std::int8_t>) {
      return f16_scales ? static_cast<double>(to_float(rows_f16(b, h, j))) : rows(b, h, j);
    } else {
      return heads(b, h);
    }
  }

  kv_scales scales() const {
    kv_scales sc;
    if constexpr (std::is_same_v<T, std::int8_t>) {
      if (f16_scales)
        sc.rows_f16 = rows_f16.cview();
      else
        sc.rows = rows.cview();
    } else {
      sc.heads = heads.cview();
    }
    return sc;
  }
};

/// A quantized K or V copied into a shuffled page pool, with its row scales
/// paged alongside (int8) or its head scales per sequence (fp8).
template <class T>
struct quantized_pages {
  tensor<T, 4> pool{{1, 1, 1, 1}};   // (num_pages, hkv, page_size, d)
  tensor<float, 3> rows{{1, 1, 1}};  // int8: (num_pages, hkv, page_size)
  shuffled_table table;
  paged_kv<const T> view;
  kv_scales scales;

  quantized_pages(const quantized_kv<T>& src, const std::vector<std::int64_t>& lengths, std::int64_t page_size,
                  std::mt19937_64& rng)
      : table(lengths, page_size, rng) {
    const std::int64_t b = src.data.extent(0), hkv = src.data.extent(1), d = src.data.extent(3);
    pool = tensor<T, 4>({table.num_pages, hkv, page_size, d});
    std::fill_n(reinterpret_cast<unsigned char*>(pool.data()), pool.size() * sizeof(T), 0x7f);  // NaN / 127 in unused slots
    rows = tensor<float, 3>({table.num_pages, hkv, page_size}, std::numeric_limits<float>::quiet_NaN());
    for (std::int64_t i = 0; i < b; ++i)
      for (std::int64_t h = 0; h < hkv; ++h)
        for (std::int64_t j = 0; j < lengths[i]; ++j) {
          const std::int64_t p = table.page(i, j, page_size), slot = j % page_size;
          for (std::int64_t x = 0; x < d; ++x) pool(p, h, slot, x) = src.data(i, h, j, x);
          rows(p, h, slot) = static_cast<float>(src.scale(i, h, j));
        }
    view.pages = pool.cview();
    view.table = table.view();
    if constexpr (std::is_same_v<T, std::int8_t>)
      scales.rows = rows.cview();
    else
      scales.heads = src.heads.cview();
  }
};

}  // namespace attnkit::test
