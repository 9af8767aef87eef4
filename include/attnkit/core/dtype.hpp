// Element storage types: half (IEEE binary16) and bfloat16, with exact
// round-to-nearest-even conversion from float and exact widening to float;
// and the 8-bit KV types int8 (std::int8_t), fp8_e4m3 and fp8_e5m2.
//
// The 16-bit types are plain storage: arithmetic always happens in float. NaN
// payloads are kept (truncated to the narrower mantissa, never turned into inf),
// and ±0, subnormals and ±inf convert exactly.
//
// fp8 e4m3 is OCP's E4M3FN (no infinities, NaN is S.1111.111, largest finite
// 448); fp8 e5m2 is IEEE-like (infinities, NaNs, largest finite 57344). Both
// widen to float exactly. Narrowing from float, the rule engines' fp8 caches
// use: finite values round to nearest, ties to even; anything beyond the
// largest finite value, ±inf included, saturates to ±largest finite; NaN stays
// NaN (e4m3 S.1111.111, e5m2 S.11111.10). int8 KV values are integers that a
// scale turns into values (kv_scales.hpp, kv/quantize.hpp).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE

namespace detail {
ATTNKIT_HOST_DEVICE inline std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
ATTNKIT_HOST_DEVICE inline float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// float -> binary16, round to nearest, ties to even.
ATTNKIT_HOST_DEVICE inline std::uint16_t float_to_half_bits(float f) {
  const std::uint32_t x = float_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const std::uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf or NaN
    if (ax == 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
    std::uint32_t payload = (ax >> 13) & 0x3ffu;
    if (payload == 0) payload = 0x200u;  // a NaN must stay a NaN
    return static_cast<std::uint16_t>(sign | 0x7c00u | payload);
  }
  if (ax >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {  // below 2^-14: a half subnormal (or zero), units of 2^-24
    const std::uint32_t e = ax >> 23;
    if (e < 102) return static_cast<std::uint16_t>(sign);  // below 2^-25: rounds to zero
    const std::uint32_t mant = (ax & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126 - e;  // 14..24
    std::uint32_t m = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (m & 1u))) ++m;  // may carry into the smallest normal
    return static_cast<std::uint16_t>(sign | m);
  }
  std::uint32_t h = (ax - 0x38000000u) >> 13;  // rebias exponent 127 -> 15, drop 13 bits
  const std::uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // a carry rolls into the exponent
  return static_cast<std::uint16_t>(sign | h);
}

ATTNKIT_HOST_DEVICE inline float half_bits_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t e = (h >> 10) & 0x1fu;
  const std::uint32_t m = h & 0x3ffu;
  if (e == 0x1f) return bits_float(sign | 0x7f800000u | (m << 13));
  if (e == 0) {  // zero or subnormal: m * 2^-24, exact in float
    const float magnitude = static_cast<float>(m) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return bits_float(sign | ((e + 112) << 23) | (m << 13));
}

// float -> bfloat16, round to nearest, ties to even (overflow rounds to inf, as it should).
ATTNKIT_HOST_DEVICE inline std::uint16_t float_to_bf16_bits(float f) {
  const std::uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {  // NaN: keep the top payload bits, stay NaN
    std::uint32_t b = x >> 16;
    if ((b & 0x7fu) == 0) b |= 0x40u;
    return static_cast<std::uint16_t>(b);
  }
  return static_cast<std::uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

ATTNKIT_HOST_DEVICE inline float bf16_bits_to_float(std::uint16_t b) {
  return bits_float(static_cast<std::uint32_t>(b) << 16);
}

/// An fp8 format: E exponent bits, M mantissa bits, bias 2^(E-1) - 1.
template <int E, int M, std::uint8_t MaxFinite, std::uint8_t NaN, bool HasInf>
struct fp8_format {
  static constexpr int bias = (1 << (E - 1)) - 1;

  // float -> fp8: round to nearest even, saturate, NaN stays NaN.
  ATTNKIT_HOST_DEVICE static std::uint8_t encode(float f) {
    const std::uint32_t x = float_bits(f);
    const std::uint32_t sign = (x >> 24) & 0x80u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return static_cast<std::uint8_t>(sign | NaN);
    const int biased = static_cast<int>(ax >> 23);
    const int e = biased - 127 + bias;  // the fp8 exponent field of |f|'s binade
    const std::uint32_t mant = (ax & 0x7fffffu) | (biased > 0 ? 0x800000u : 0u);
    if (e > (MaxFinite >> M)) return static_cast<std::uint8_t>(sign | MaxFinite);  // inf too
    // Normal: keep M fraction bits (a carry rolls into the exponent). Subnormal:
    // whole units of 2^(1 - bias - M); a float subnormal sits one binade up.
    const int shift = e >= 1 ? 23 - M : 24 - M - e + (biased == 0 ? -1 : 0);
    if (shift >= 25) return static_cast<std::uint8_t>(sign);  // below half the smallest subnormal
    std::uint32_t h = e >= 1 ? (static_cast<std::uint32_t>(e) << M) | ((mant & 0x7fffffu) >> shift) : mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1), half_unit = 1u << (shift - 1);
    if (rem > half_unit || (rem == half_unit && (h & 1u))) ++h;
    if (h > MaxFinite) h = MaxFinite;  // rounded past the largest finite value
    return static_cast<std::uint8_t>(sign | h);
  }

  ATTNKIT_HOST_DEVICE static float decode(std::uint8_t b) {
    const std::uint32_t sign = static_cast<std::uint32_t>(b & 0x80u) << 24;
    const std::uint32_t e = (b >> M) & ((1u << E) - 1), m = b & ((1u << M) - 1);
    if (e == (1u << E) - 1 && (HasInf || m == (1u << M) - 1))
      return bits_float(sign | 0x7f800000u | (HasInf && m == 0 ? 0u : 0x400000u));  // inf or NaN
    if (e == 0) {  // zero or subnormal: m units of 2^(1 - bias - M), exact in float
      const float magnitude = static_cast<float>(m) * bits_float(static_cast<std::uint32_t>(127 + 1 - bias - M) << 23);
      return sign ? -magnitude : magnitude;
    }
    return bits_float(sign | ((e - bias + 127) << 23) | (m << (23 - M)));
  }
};

using e4m3_format = fp8_format<4, 3, 0x7e, 0x7f, false>;
using e5m2_format = fp8_format<5, 2, 0x7b, 0x7e, true>;
}  // namespace detail

/// IEEE 754 binary16 storage.
struct half {
  std::uint16_t bits;

  half() = default;
  ATTNKIT_HOST_DEVICE explicit half(float f) : bits(detail::float_to_half_bits(f)) {}
  ATTNKIT_HOST_DEVICE static half from_bits(std::uint16_t b) {
    half h;
    h.bits = b;
    return h;
  }
  ATTNKIT_HOST_DEVICE explicit operator float() const { return detail::half_bits_to_float(bits); }
};

/// bfloat16 storage: the top 16 bits of a float.
struct bfloat16 {
  std::uint16_t bits;

  bfloat16() = default;
  ATTNKIT_HOST_DEVICE explicit bfloat16(float f) : bits(detail::float_to_bf16_bits(f)) {}
  ATTNKIT_HOST_DEVICE static bfloat16 from_bits(std::uint16_t b) {
    bfloat16 h;
    h.bits = b;
    return h;
  }
  ATTNKIT_HOST_DEVICE explicit operator float() const { return detail::bf16_bits_to_float(bits); }
};

/// fp8 storage of one format: one byte, widened exactly (to_float) and narrowed
/// by the rule above (the explicit constructor).
template <class Format>
struct fp8_storage {
  std::uint8_t bits;

  fp8_storage() = default;
  ATTNKIT_HOST_DEVICE explicit fp8_storage(float f) : bits(Format::encode(f)) {}
  ATTNKIT_HOST_DEVICE static fp8_storage from_bits(std::uint8_t b) {
    fp8_storage x;
    x.bits = b;
    return x;
  }
  ATTNKIT_HOST_DEVICE explicit operator float() const { return Format::decode(bits); }
};

/// fp8 e4m3 (E4M3FN): 1 sign, 4 exponent (bias 7) and 3 mantissa bits.
using fp8_e4m3 = fp8_storage<detail::e4m3_format>;
/// fp8 e5m2: 1 sign, 5 exponent (bias 15) and 2 mantissa bits, the top byte of a binary16.
using fp8_e5m2 = fp8_storage<detail::e5m2_format>;

ATTNKIT_HOST_DEVICE inline float to_float(float x) { return x; }
ATTNKIT_HOST_DEVICE inline float to_float(half x) { return detail::half_bits_to_float(x.bits); }
ATTNKIT_HOST_DEVICE inline float to_float(bfloat16 x) { return detail::bf16_bits_to_float(x.bits); }
template <class Format>
ATTNKIT_HOST_DEVICE float to_float(fp8_storage<Format> x) {
  return Format::decode(x.bits);
}
/// An int8 KV value as a float: the integer, before its scale. (A template, so
/// that other arithmetic types still convert through to_float(float) alone.)
template <class T, std::enable_if_t<std::is_same_v<T, std::int8_t>, int> = 0>
ATTNKIT_HOST_DEVICE float to_float(T x) {
  return static_cast<float>(x);
}

/// from_float<T>(x): round a float to storage type T (nearest, ties to even).
template <class T>
ATTNKIT_HOST_DEVICE T from_float(float x) {
  if constexpr (std::is_same_v<T, float>) {
    return x;
  } else {
    return T(x);
  }
}

/// True for the element types attnkit kernels read and write.
template <class T>
inline constexpr bool is_element_type_v =
    std::is_same_v<T, float> || std::is_same_v<T, half> || std::is_same_v<T, bfloat16>;

/// True for the quantized KV types: values are the stored numbers times a scale (kv_scales.hpp).
template <class T>
inline constexpr bool is_quantized_v =
    std::is_same_v<T, std::int8_t> || std::is_same_v<T, fp8_e4m3> || std::is_same_v<T, fp8_e5m2>;

/// True for the types K and V may hold: the element types and the quantized types.
template <class T>
inline constexpr bool is_kv_type_v = is_element_type_v<T> || is_quantized_v<T>;

/// Short name of a K/V or element type: "f32", "f16", "bf16", "int8", "e4m3", "e5m2".
template <class T>
constexpr const char* dtype_name() {
  static_assert(is_kv_type_v<T>, "not an attnkit element type");
  if constexpr (std::is_same_v<T, float>) return "f32";
  if constexpr (std::is_same_v<T, half>) return "f16";
  if constexpr (std::is_same_v<T, bfloat16>) return "bf16";
  if constexpr (std::is_same_v<T, std::int8_t>) return "int8";
  if constexpr (std::is_same_v<T, fp8_e4m3>) return "e4m3";
  return "e5m2";
}

ATTNKIT_END_NAMESPACE
