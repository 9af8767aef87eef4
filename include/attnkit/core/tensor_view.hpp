// tensor_view<T, Rank>: a non-owning strided view, named after std::mdspan.
//
// Extents and strides are int64 element counts. Attention tensors are always
// addressed in the logical order (b, h, s, d); BHSD and BSHD memory differ only
// in strides, which make_bhsd / make_bshd set up. Views are host objects: the
// cuda backend unpacks them into pointers and strides before a launch.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE

template <class T, std::size_t Rank>
class tensor_view {
  static_assert(Rank >= 1, "tensor_view needs rank >= 1");

 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using index_type = std::int64_t;
  using extents_type = std::array<index_type, Rank>;

  /// The empty view: null data, every extent 0. Optional outputs use it for "not requested".
  tensor_view() = default;

  tensor_view(T* data, const extents_type& extents, const extents_type& strides)
      : data_(data), extents_(extents), strides_(strides) {}

  /// Row-major (last index fastest) view over contiguous memory.
  tensor_view(T* data, const extents_type& extents) : data_(data), extents_(extents) {
    index_type stride = 1;
    for (std::size_t r = Rank; r-- > 0;) {
      strides_[r] = stride;
      stride *= extents[r];
    }
  }

  /// A view of T converts to a view of const T.
  template <class U, class = std::enable_if_t<std::is_same_v<const U, T> && !std::is_same_v<U, T>>>
  tensor_view(const tensor_view<U, Rank>& other)
      : data_(other.data_handle()), extents_(other.extents()), strides_(other.strides()) {}

  static constexpr std::size_t rank() { return Rank; }
  T* data_handle() const { return data_; }
  index_type extent(std::size_t r) const { return extents_[r]; }
  index_type stride(std::size_t r) const { return strides_[r]; }
  const extents_type& extents() const { return extents_; }
  const extents_type& strides() const { return strides_; }

  /// Number of elements addressed (the product of the extents).
  index_type size() const {
    index_type n = 1;
    for (auto e : extents_) n *= e;
    return n;
  }
  /// Whether some extent is 0 (never multiplies, so it is safe on unchecked extents).
  bool empty() const {
    for (auto e : extents_)
      if (e == 0) return true;
    return false;
  }

  template <class... I>
  T& operator()(I... idx) const {
    static_assert(sizeof...(I) == Rank, "one index per dimension");
    const index_type i[] = {static_cast<index_type>(idx)...};
    index_type offset = 0;
    for (std::size_t r = 0; r < Rank; ++r) offset += i[r] * strides_[r];
    return data_[offset];
  }

  /// The same view restricted to [begin, end) along dimension dim.
  tensor_view slice(std::size_t dim, index_type begin, index_type end) const {
    extents_type extents = extents_;
    extents[dim] = end - begin;
    const bool none = end == begin || empty();  // an empty view may be null: no offset from it
    return tensor_view(none ? data_ : data_ + begin * strides_[dim], extents, strides_);
  }

 private:
  T* data_ = nullptr;
  extents_type extents_{};
  extents_type strides_{};
};

/// (b, h, s, d) view over memory laid out as [b][h][s][d].
template <class T>
tensor_view<T, 4> make_bhsd(T* data, std::int64_t b, std::int64_t h, std::int64_t s, std::int64_t d) {
  return tensor_view<T, 4>(data, {b, h, s, d}, {h * s * d, s * d, d, 1});
}

/// (b, h, s, d) view over memory laid out as [b][s][h][d].
template <class T>
tensor_view<T, 4> make_bshd(T* data, std::int64_t b, std::int64_t s, std::int64_t h, std::int64_t d) {
  return tensor_view<T, 4>(data, {b, h, s, d}, {s * h * d, d, h * d, 1});
}

/// One head of a (b, h, s, d) tensor: the (s, d) view at batch b, head h.
template <class T>
tensor_view<T, 2> slice_head(const tensor_view<T, 4>& v, std::int64_t b, std::int64_t h) {
  T* head = v.empty() ? v.data_handle() : &v(b, h, 0, 0);  // an empty view may be null: no offset from it
  return tensor_view<T, 2>(head, {v.extent(2), v.extent(3)}, {v.stride(2), v.stride(3)});
}

/// One head of a (b, h, s) tensor such as the LSE: the (s) view at batch b, head h.
template <class T>
tensor_view<T, 1> slice_head(const tensor_view<T, 3>& v, std::int64_t b, std::int64_t h) {
  T* head = v.empty() ? v.data_handle() : &v(b, h, 0);
  return tensor_view<T, 1>(head, {v.extent(2)}, {v.stride(2)});
}

ATTNKIT_END_NAMESPACE
