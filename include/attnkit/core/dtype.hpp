// Element storage types: half (IEEE binary16) and bfloat16, with exact
// round-to-nearest-even conversion from float and exact widening to float.
//
// They are plain 16-bit storage: arithmetic always happens in float. NaN
// payloads are kept (truncated to the narrower mantissa, never turned into inf),
// and ±0, subnormals and ±inf convert exactly.
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

ATTNKIT_HOST_DEVICE inline float to_float(float x) { return x; }
ATTNKIT_HOST_DEVICE inline float to_float(half x) { return detail::half_bits_to_float(x.bits); }
ATTNKIT_HOST_DEVICE inline float to_float(bfloat16 x) { return detail::bf16_bits_to_float(x.bits); }

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

/// Short name of an element type: "f32", "f16", "bf16".
template <class T>
constexpr const char* dtype_name() {
  static_assert(is_element_type_v<T>, "not an attnkit element type");
  if constexpr (std::is_same_v<T, float>) return "f32";
  if constexpr (std::is_same_v<T, half>) return "f16";
  return "bf16";
}

ATTNKIT_END_NAMESPACE
