// Quantizing K and V for a cache: what kv_pool does on append, and standalone
// for engines with their own cache. Values come back as to_float(stored) *
// scale (core/kv_scales.hpp); the attention kernels dequantize in registers.
//
// int8, symmetric, one scale per (row, KV head), like llama.cpp's q8_0 with a
// whole row as the block: scale = max|x| / 127 stored as fp32 or f16 (never
// below the smallest normal of its type; an all-zero row stores scale 1), and
// q = x / scale rounded to nearest even, clamped to [-127, 127]: -128 is never
// produced. int8 holds no NaN or infinity: a row holding one is an error,
// raised before anything is written.
//
// fp8 (e4m3, e5m2), one fp32 scale per (sequence, KV head) chosen by the
// engine (calibration; 1 when unknown): q = fp8(x / scale), which rounds to
// nearest even, saturates beyond the largest finite value (±inf included) and
// keeps NaN (core/dtype.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/kv_scales.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/view_checks.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// The int8 scale of a row whose largest magnitude is amax, as stored in S (float or half).
template <class S>
float int8_scale(const char* fn, float amax) {
  if (amax == 0.0f) return 1.0f;
  const float smallest = std::is_same_v<S, half> ? 6.103515625e-5f : std::numeric_limits<float>::min();
  const float scale = to_float(from_float<S>(std::max(amax / 127.0f, smallest)));
  ATTNKIT_CHECK(std::isfinite(scale), fn, ": a row's largest magnitude ", amax, " needs scale ", amax / 127.0f,
                ", beyond the f16 scales' range (use fp32 scales)");
  return scale;
}

/// Quantizes n values of src (stride apart) into dst; returns the row's scale
/// (int8) or takes the head's (fp8). Throws before writing if an int8 row holds NaN or inf.
template <class T, class S = float, class U>
float quantize_row(const char* fn, const U* src, std::int64_t stride, std::int64_t n, T* dst, float head_scale) {
  if constexpr (std::is_same_v<T, std::int8_t>) {
    float amax = 0.0f;
    for (std::int64_t x = 0; x < n; ++x) {
      const float v = to_float(src[x * stride]);
      ATTNKIT_CHECK(std::isfinite(v), fn, ": value ", x, " of a row is ", v,
                    "; int8 holds finite values only (NaN and inf have no int8 code)");
      amax = std::max(amax, std::fabs(v));
    }
    const float scale = int8_scale<S>(fn, amax);
    for (std::int64_t x = 0; x < n; ++x) {
      const float q = std::nearbyint(to_float(src[x * stride]) / scale);
      dst[x] = static_cast<std::int8_t>(std::clamp(q, -127.0f, 127.0f));
    }
    return scale;
  } else {
    for (std::int64_t x = 0; x < n; ++x) dst[x] = T(to_float(src[x * stride]) / head_scale);
    return head_scale;
  }
}

/// src and dst (b, h, s, d), dst with unit stride on d, and scales whose R
/// extents are src's first R ("(b, h, s)" or "(b, h)").
template <class U, class Q, class S, std::size_t R>
void check_quantize_views(const char* fn, const tensor_view<U, 4>& src, const tensor_view<Q, 4>& dst,
                          const tensor_view<S, R>& scales, const char* scales_shape) {
  check_view(fn, "src", src, false);
  check_view(fn, "dst", dst, true);
  check_view(fn, "scales", scales, false);
  for (std::size_t r = 0; r < 4; ++r)
    ATTNKIT_CHECK(dst.extent(r) == src.extent(r) && (r >= R || scales.extent(r) == src.extent(r)), fn,
                  ": dst (b, h, s, d) and scales ", scales_shape, " must match src's extents, extent(", r,
                  ") differs");
}

}  // namespace detail

/// int8 quantization of src (b, h, s, d), any element type, into dst (same
/// shape, unit stride on d) and one scale per row into scales (b, h, s), fp32
/// or f16. Checks every row before writing any.
template <class U, class S>
void quantize_int8(tensor_view<U, 4> src, tensor_view<std::int8_t, 4> dst, tensor_view<S, 3> scales) {
  constexpr const char* fn = "quantize_int8";
  static_assert(std::is_same_v<S, float> || std::is_same_v<S, half>, "int8 scales are float or half");
  detail::check_quantize_views(fn, src, dst, scales, "(b, h, s)");
  const std::int64_t d = src.extent(3);
  for (int pass = 0; pass < 2; ++pass)  // pass 0 checks every row, pass 1 writes
    for (std::int64_t b = 0; b < src.extent(0); ++b)
      for (std::int64_t h = 0; h < src.extent(1); ++h)
        for (std::int64_t i = 0; i < src.extent(2); ++i) {
          const U* row = &src(b, h, i, 0);
          if (pass == 0) {
            for (std::int64_t x = 0; x < d; ++x)
              ATTNKIT_CHECK(std::isfinite(to_float(row[x * src.stride(3)])), fn, ": src(", b, ", ", h, ", ", i, ", ",
                            x, ") is ", to_float(row[x * src.stride(3)]), "; int8 holds finite values only");
          } else {
            scales(b, h, i) = from_float<S>(detail::quantize_row<std::int8_t, S>(fn, row, src.stride(3), d,
                                                                                &dst(b, h, i, 0), 1.0f));
          }
        }
}

/// fp8 quantization of src (b, h, s, d) into dst (same shape, unit stride on d)
/// with the given scales (b, h): dst = fp8(src / scale). Each scale must be finite and > 0.
template <class U, class F8>
void quantize_fp8(tensor_view<U, 4> src, tensor_view<F8, 4> dst, tensor_view<const float, 2> scales) {
  constexpr const char* fn = "quantize_fp8";
  static_assert(std::is_same_v<F8, fp8_e4m3> || std::is_same_v<F8, fp8_e5m2>, "dst holds fp8_e4m3 or fp8_e5m2");
  detail::check_quantize_views(fn, src, dst, scales, "(b, h)");
  for (std::int64_t b = 0; b < src.extent(0); ++b)
    for (std::int64_t h = 0; h < src.extent(1); ++h)
      ATTNKIT_CHECK(std::isfinite(scales(b, h)) && scales(b, h) > 0.0f, fn, ": scales(", b, ", ", h,
                    ") must be finite and > 0, got ", scales(b, h));
  for (std::int64_t b = 0; b < src.extent(0); ++b)
    for (std::int64_t h = 0; h < src.extent(1); ++h)
      for (std::int64_t i = 0; i < src.extent(2); ++i)
        detail::quantize_row<F8>(fn, &src(b, h, i, 0), src.stride(3), src.extent(3), &dst(b, h, i, 0), scales(b, h));
}

/// dst (b, h, s, d) = the values a quantized src (b, h, s, d) stands for,
/// to_float(src) * scale, with scales as a strided call takes them (kv_scales.hpp).
template <class Q, class O>
void dequantize(tensor_view<const Q, 4> src, const kv_scales& scales, tensor_view<O, 4> dst) {
  constexpr const char* fn = "dequantize";
  static_assert(is_quantized_v<Q> && is_element_type_v<O>, "src is int8 or fp8; dst float, half or bfloat16");
  detail::check_view(fn, "src", src, false);
  detail::check_view(fn, "dst", dst, false);
  for (std::size_t r = 0; r < 4; ++r)
    ATTNKIT_CHECK(dst.extent(r) == src.extent(r), fn, ": dst.extent(", r, ") must equal src's ", src.extent(r),
                  ", got ", dst.extent(r));
  constexpr bool int8 = std::is_same_v<Q, std::int8_t>;
  const std::int64_t want[] = {src.extent(0), src.extent(1), src.extent(2)};
  for (std::size_t r = 0; r < (int8 ? 3u : 2u); ++r) {
    const std::int64_t e = int8 ? (scales.rows.data_handle() ? scales.rows.extent(r) : scales.rows_f16.extent(r))
                                : scales.heads.extent(r);
    ATTNKIT_CHECK(e == want[r], fn, ": scales.", int8 ? "rows" : "heads", ".extent(", r, ") must be ", want[r],
                  ", got ", e);
  }
  for (std::int64_t b = 0; b < src.extent(0); ++b)
    for (std::int64_t h = 0; h < src.extent(1); ++h)
      for (std::int64_t i = 0; i < src.extent(2); ++i) {
        const float scale = int8 ? scales.row(b, h, i) : scales.heads(b, h);
        for (std::int64_t x = 0; x < src.extent(3); ++x) dst(b, h, i, x) = from_float<O>(to_float(src(b, h, i, x)) * scale);
      }
}

ATTNKIT_END_NAMESPACE
