// tensor<T, Rank>: an owning, 64-byte aligned, row-major buffer with a view.
// For tests, examples and workspaces; kernels only ever see tensor_view.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <type_traits>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE

inline constexpr std::size_t tensor_alignment = 64;

template <class T, std::size_t Rank>
class tensor {
  static_assert(std::is_trivially_copyable_v<T>, "tensor holds plain element types");

 public:
  using extents_type = std::array<std::int64_t, Rank>;

  tensor() = default;

  /// Uninitialized storage for the given extents (row-major).
  explicit tensor(const extents_type& extents) : extents_(extents) {
    std::int64_t n = 1;
    for (auto e : extents) {
      ATTNKIT_CHECK(e >= 0, "tensor: extents must be >= 0, got ", e);
      ATTNKIT_CHECK(e == 0 || n <= INT64_MAX / static_cast<std::int64_t>(sizeof(T)) / e,
                    "tensor: the extents hold more than 2^63 bytes");
      n *= e;
    }
    size_ = n;
    if (n > 0) {
      const std::size_t bytes = static_cast<std::size_t>(n) * sizeof(T);
      void* p = ::operator new(bytes, std::align_val_t{tensor_alignment}, std::nothrow);
      ATTNKIT_CHECK(p != nullptr, "tensor: cannot allocate ", bytes, " bytes");
      data_.reset(static_cast<T*>(p));
    }
  }

  tensor(const extents_type& extents, const T& fill) : tensor(extents) { std::fill_n(data(), size_, fill); }

  T* data() const { return data_.get(); }
  std::int64_t size() const { return size_; }
  std::int64_t extent(std::size_t r) const { return extents_[r]; }
  const extents_type& extents() const { return extents_; }

  tensor_view<T, Rank> view() const { return tensor_view<T, Rank>(data(), extents_); }
  tensor_view<const T, Rank> cview() const { return tensor_view<const T, Rank>(data(), extents_); }

  template <class... I>
  T& operator()(I... idx) const {
    return view()(idx...);
  }

 private:
  struct aligned_delete {
    void operator()(T* p) const { ::operator delete(p, std::align_val_t{tensor_alignment}); }
  };
  std::unique_ptr<T, aligned_delete> data_;
  extents_type extents_{};
  std::int64_t size_ = 0;
};

ATTNKIT_END_NAMESPACE
