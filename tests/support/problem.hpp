// A random attention problem's shape and its Q/K/V/O buffers in BHSD or BSHD
// memory. Shared by tests, benchmarks and the tour.
#pragma once

#include <cstdint>
#include <ostream>

#include "attnkit/core/tensor.hpp"
#include "attnkit/core/tensor_view.hpp"

namespace attnkit::test {

enum class layout { bhsd, bshd };

inline const char* layout_name(layout l) { return l == layout::bhsd ? "bhsd" : "bshd"; }
inline std::ostream& operator<<(std::ostream& out, layout l) { return out << layout_name(l); }

struct problem {
  std::int64_t b = 1, hq = 1, hkv = 1, sq = 1, skv = 1, d = 8, dv = 8;
  layout lay = layout::bhsd;
};

/// A (b, h, s, d) tensor in the given layout, backed by its own buffer.
template <class T>
struct bhsd_tensor {
  tensor<T, 1> storage;
  tensor_view<T, 4> view;

  bhsd_tensor(std::int64_t b, std::int64_t h, std::int64_t s, std::int64_t d, layout lay)
      : storage({b * h * s * d}),
        view(lay == layout::bhsd ? make_bhsd(storage.data(), b, h, s, d) : make_bshd(storage.data(), b, s, h, d)) {}

  tensor_view<const T, 4> cview() const { return view; }
};

}  // namespace attnkit::test
