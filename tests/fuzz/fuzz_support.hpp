// What every fuzz target shares: decoding bytes into shapes, strided views over
// exactly the memory they address, hostile variations (negative, zero and huge
// extents, wrong strides, null data), and the checks each call must pass:
//   - only attnkit::error escapes a call (anything else aborts the run);
//   - a call that throws has written nothing (outputs keep their canary bytes);
//   - cpu and reference accept and reject the same calls, and agree on values
//     wherever the reference's output is finite.
// Sanitizer reports (out of bounds, overflow, null) end the run by themselves.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "attnkit/attnkit.hpp"

namespace attnkit::fuzz {

/// Stops the run with a message: the fuzzer keeps the input that got here.
[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "fuzz check failed: %s\n", what);
  std::abort();
}

/// Views corrupted so far in this input: at most one, so a corrupt field can
/// never be matched by another (consistent lies about memory the library cannot
/// see). Each target calls begin_input() first.
inline int& corruptions() {
  static int n = 0;
  return n;
}
inline void begin_input() { corruptions() = 0; }

/// Runs call; returns whether it was accepted. Any exception but attnkit::error fails.
/// ATTNKIT_FUZZ_VERBOSE=1 prints each rejection's message (to replay a failing input).
template <class Call>
bool accepted(Call&& call) {
  try {
    call();
    return true;
  } catch (const error& e) {
    if (std::getenv("ATTNKIT_FUZZ_VERBOSE")) std::fprintf(stderr, "rejected: %s\n", e.what());  // when replaying
    return false;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "foreign exception: %s\n", e.what());
    fail("a call threw something other than attnkit::error");
  }
}

/// Executors a call may get: serial, or a custom one of 3 slots that runs its
/// items in reverse (results must not depend on either).
inline executor pick_executor(FuzzedDataProvider& in) {
  if (in.ConsumeBool()) return executor::serial();
  return executor::custom(3, [](std::int64_t n, const std::function<void(std::int64_t)>& task) {
    for (std::int64_t i = n - 1; i >= 0; --i) task(i);
  });
}

/// A small extent, sometimes 0.
inline std::int64_t small(FuzzedDataProvider& in, std::int64_t most) { return in.ConsumeIntegralInRange<std::int64_t>(0, most); }

/// One hostile extent: what a corrupted field becomes.
inline std::int64_t hostile_extent(FuzzedDataProvider& in) {
  static constexpr std::int64_t values[] = {-1, -3, std::numeric_limits<std::int64_t>::min(),
                                            std::numeric_limits<std::int64_t>::max(), std::int64_t{1} << 62,
                                            std::int64_t{1} << 31, 100000};
  return values[in.ConsumeIntegralInRange<std::size_t>(0, std::size(values) - 1)];
}

/// A random value; mostly normal, sometimes NaN or +-inf when `poison`.
inline float value(FuzzedDataProvider& in, bool poison) {
  const int kind = in.ConsumeIntegralInRange<int>(0, poison ? 40 : 0);
  if (kind == 1) return std::numeric_limits<float>::quiet_NaN();
  if (kind == 2) return std::numeric_limits<float>::infinity();
  if (kind == 3) return -std::numeric_limits<float>::infinity();
  return in.ConsumeFloatingPointInRange<float>(-2.0f, 2.0f);
}

/// A rank-R view over storage it owns: the given extents in one of several
/// layouts (row-major, dims 1 and 2 swapped, padded rows, a reversed dim 2, a
/// broadcast dim 0 for inputs), with the storage exactly covering what the view
/// addresses. `corrupt` may then make the view invalid (one field): a hostile
/// extent, a non-unit innermost stride or null data. Canary bytes fill outputs.
template <std::size_t R>
struct fuzz_view {
  std::vector<float> storage;
  tensor_view<float, R> view;
  bool corrupted = false;

  fuzz_view() = default;
  fuzz_view(FuzzedDataProvider& in, std::array<std::int64_t, R> ext, bool input, bool poison, bool may_corrupt) {
    std::array<std::int64_t, R> order{};  // order[0] is the outermost dim in memory
    for (std::size_t r = 0; r < R; ++r) order[r] = static_cast<std::int64_t>(r);
    const int layout = in.ConsumeIntegralInRange<int>(0, 4);
    if (layout == 1 && R >= 4) std::swap(order[1], order[2]);
    std::array<std::int64_t, R> strides{};
    std::int64_t step = 1;
    for (std::size_t i = R; i-- > 0;) {
      const std::size_t r = static_cast<std::size_t>(order[i]);
      strides[r] = step;
      step *= std::max<std::int64_t>(ext[r], 1) + (layout == 2 && i + 1 < R ? 1 : 0);  // padded rows
    }
    std::int64_t offset = 0;
    if (layout == 3 && R >= 3 && ext[R - 2] > 1) {  // dim R-2 runs backwards
      offset = (ext[R - 2] - 1) * strides[R - 2];
      strides[R - 2] = -strides[R - 2];
    }
    if (layout == 4 && input && R >= 2) strides[0] = 0;  // every batch reads the same memory
    std::int64_t elements = 1;
    for (std::size_t r = 0; r < R; ++r) elements *= ext[r];
    storage.assign(static_cast<std::size_t>(elements > 0 ? step : 0), input ? 0.0f : canary());
    if (input)
      for (float& x : storage) x = value(in, poison);
    view = tensor_view<float, R>(storage.empty() ? nullptr : storage.data() + offset, ext, strides);
    if (may_corrupt && corruptions() == 0 && in.ConsumeIntegralInRange<int>(0, 30) == 0) corrupt(in);
  }

  static float canary() {
    float c;
    const std::uint32_t bits = 0x7fa5a5a5u;  // a NaN no kernel produces
    std::memcpy(&c, &bits, sizeof c);
    return c;
  }

  /// Whether the storage still holds only canary bytes.
  bool untouched() const {
    const float c = canary();
    for (const float& x : storage)
      if (std::memcmp(&x, &c, sizeof c) != 0) return false;
    return true;
  }

  void corrupt(FuzzedDataProvider& in) {
    corrupted = true;
    ++corruptions();
    auto ext = view.extents();
    auto strides = view.strides();
    float* data = view.data_handle();
    switch (in.ConsumeIntegralInRange<int>(0, 2)) {
      case 0: ext[in.ConsumeIntegralInRange<std::size_t>(0, R - 1)] = hostile_extent(in); break;
      case 1:  // attention tensors need unit stride on d; lower ranks may be strided
        if (R == 4 && ext[R - 1] > 1) strides[R - 1] = 2;
        break;
      default: data = view.size() > 0 ? nullptr : data; break;
    }
    view = tensor_view<float, R>(data, ext, strides);
  }

  tensor_view<const float, R> in() const { return view; }
};

/// A view's extents and strides, for replaying a failing input.
template <std::size_t R>
std::string describe(const fuzz_view<R>& v) {
  std::string out = v.view.data_handle() ? "(" : "null (";
  for (std::size_t r = 0; r < R; ++r) out += std::to_string(v.view.extent(r)) + (r + 1 < R ? " " : ") strides (");
  for (std::size_t r = 0; r < R; ++r) out += std::to_string(v.view.stride(r)) + (r + 1 < R ? " " : ")");
  return out;
}

/// Copies of output storage, so a second backend writes to its own.
template <std::size_t R>
fuzz_view<R> fresh_output_like(const fuzz_view<R>& v) {
  fuzz_view<R> out;
  out.storage.assign(v.storage.size(), fuzz_view<R>::canary());
  const float* base = v.storage.empty() ? nullptr : v.storage.data();
  const std::ptrdiff_t offset = v.view.data_handle() && base ? v.view.data_handle() - base : 0;
  out.view = tensor_view<float, R>(v.view.data_handle() ? out.storage.data() + offset : nullptr, v.view.extents(),
                                   v.view.strides());
  out.corrupted = v.corrupted;
  return out;
}

/// |got - want| <= 1e-3 (1 + |want|) for every element of a view whose element
/// is finite in want; both views have the same extents and strides.
template <std::size_t R>
void expect_close(const tensor_view<float, R>& got, const tensor_view<float, R>& want, const char* what) {
  std::array<std::int64_t, R> i{};
  for (std::size_t r = 0; r < R; ++r)
    if (want.extent(r) == 0) return;
  while (true) {
    const float w = std::apply([&](auto... x) { return want(x...); }, i);
    const float g = std::apply([&](auto... x) { return got(x...); }, i);
    if (std::isfinite(w) && !(std::abs(g - w) <= 1e-3f * (1.0f + std::abs(w)))) {
      std::fprintf(stderr, "%s: got %g, want %g\n", what, g, w);
      fail("cpu and reference disagree");
    }
    std::size_t r = R;
    while (r-- > 0) {
      if (++i[r] < want.extent(r)) break;
      i[r] = 0;
      if (r == 0) return;
    }
  }
}

/// Whether some element of row (i0, i1, j) of a rank-4 view is not finite.
inline bool row_bad(const tensor_view<float, 4>& t, std::int64_t i0, std::int64_t i1, std::int64_t j) {
  for (std::int64_t x = 0; x < t.extent(3); ++x)
    if (!std::isfinite(t(i0, i1, j, x))) return true;
  return false;
}

/// o and lse of both backends, row by row, skipping each row that sees a key
/// whose K or V is not finite (non-finite inputs are the caller's; only keys a
/// row cannot see are promised to stay out of it). seq_len(b) gives sequence
/// b's key count, key_bad(b, kv_head, j) whether key j is poisoned.
template <class Len, class Bad>
void expect_rows_close(const tensor_view<float, 4>& o, const tensor_view<float, 4>& ref_o,
                       const tensor_view<float, 3>& lse, const tensor_view<float, 3>& ref_lse,
                       const attention_params& params, std::int64_t hkv, Len&& seq_len, Bad&& key_bad) {
  const std::int64_t group = o.extent(1) / hkv, sq = o.extent(2);
  for (std::int64_t b = 0; b < o.extent(0); ++b) {
    const std::int64_t len = seq_len(b);
    const attention_variant var = make_variant(params, sq, len, 1);
    for (std::int64_t h = 0; h < o.extent(1); ++h)
      for (std::int64_t i = 0; i < sq; ++i) {
        bool sees_bad = false;
        for (std::int64_t j = 0; j < len && !sees_bad; ++j) sees_bad = var.mask.visible(i, j) && key_bad(b, h / group, j);
        if (sees_bad) continue;
        expect_close(o.slice(0, b, b + 1).slice(1, h, h + 1).slice(2, i, i + 1),
                     ref_o.slice(0, b, b + 1).slice(1, h, h + 1).slice(2, i, i + 1), "o");
        if (detail::is_given(lse))
          expect_close(lse.slice(0, b, b + 1).slice(1, h, h + 1).slice(2, i, i + 1),
                       ref_lse.slice(0, b, b + 1).slice(1, h, h + 1).slice(2, i, i + 1), "lse");
      }
  }
}

}  // namespace attnkit::fuzz
