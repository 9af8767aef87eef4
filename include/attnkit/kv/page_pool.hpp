// page_pool: the storage of a KV pool. A page holds page_size rows of one KV
// head, keys (page_size, d) and values (page_size, dv), and for int8 each
// row's key scale and value scale (fp32, kv/quantize.hpp); pages are counted, so
// sequences that share a prefix (kv_pool::fork) share its pages until one of
// them writes there. Taking and releasing a page is O(1) and allocates
// nothing: the free list is reserved for every page at construction.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

template <class T>
class page_pool {
 public:
  static constexpr bool row_scales = std::is_same_v<T, std::int8_t>;

  /// Bytes of caller memory for num_pages pages: int8's key and value scales,
  /// then every key page, then every value page.
  static std::size_t bytes(std::int64_t num_pages, std::int64_t page_size, std::int64_t d, std::int64_t dv) {
    return scale_bytes(num_pages, page_size) + static_cast<std::size_t>(num_pages * page_size * (d + dv)) * sizeof(T);
  }
  /// The alignment caller memory needs.
  static constexpr std::size_t alignment = row_scales ? alignof(float) : alignof(T);

  /// memory: bytes(...) of the caller's, aligned to `alignment`, or null to allocate them here.
  page_pool(std::int64_t num_pages, std::int64_t page_size, std::int64_t d, std::int64_t dv, void* memory)
      : num_pages_(num_pages), page_size_(page_size), d_(d), dv_(dv) {
    if (!memory) {
      own_.resize((bytes(num_pages, page_size, d, dv) + sizeof(float) - 1) / sizeof(float));
      memory = own_.data();
    }
    ks_ = static_cast<float*>(memory);
    vs_ = ks_ + (row_scales ? num_pages * page_size : 0);
    k_ = reinterpret_cast<T*>(static_cast<unsigned char*>(memory) + scale_bytes(num_pages, page_size));
    v_ = k_ + num_pages * page_size * d;
    refs_.assign(static_cast<std::size_t>(num_pages), 0);
    free_.reserve(static_cast<std::size_t>(num_pages));
    for (std::int64_t p = num_pages - 1; p >= 0; --p) free_.push_back(static_cast<std::int32_t>(p));
  }

  std::int64_t num_pages() const { return num_pages_; }
  std::int64_t page_size() const { return page_size_; }
  std::int64_t free_pages() const { return static_cast<std::int64_t>(free_.size()); }
  bool shared(std::int32_t p) const { return refs_[p] > 1; }

  /// A free page, counted once (the caller checked free_pages() first).
  std::int32_t take() {
    const std::int32_t p = free_.back();
    free_.pop_back();
    refs_[p] = 1;
    return p;
  }
  void share(std::int32_t p) { ++refs_[p]; }
  void release(std::int32_t p) {
    if (--refs_[p] == 0) free_.push_back(p);
  }
  /// A private copy of the first `rows` rows of page p, which this holder stops sharing.
  std::int32_t copy(std::int32_t p, std::int64_t rows) {
    const std::int32_t c = take();
    std::memcpy(key_row(c, 0), key_row(p, 0), sizeof(T) * static_cast<std::size_t>(rows * d_));
    std::memcpy(value_row(c, 0), value_row(p, 0), sizeof(T) * static_cast<std::size_t>(rows * dv_));
    if (row_scales) {
      std::copy_n(key_scale(p, 0), rows, key_scale(c, 0));
      std::copy_n(value_scale(p, 0), rows, value_scale(c, 0));
    }
    release(p);
    return c;
  }

  T* key_row(std::int64_t page, std::int64_t slot) const { return k_ + (page * page_size_ + slot) * d_; }
  T* value_row(std::int64_t page, std::int64_t slot) const { return v_ + (page * page_size_ + slot) * dv_; }

  /// int8 only: the scale of a row.
  float* key_scale(std::int64_t page, std::int64_t slot) const { return ks_ + page * page_size_ + slot; }
  float* value_scale(std::int64_t page, std::int64_t slot) const { return vs_ + page * page_size_ + slot; }
  /// int8 only: every row's scale as (num_pages, 1 head, page_size), the layout kv_scales.rows reads.
  tensor_view<const float, 3> key_scales() const { return {ks_, {num_pages_, 1, page_size_}}; }
  tensor_view<const float, 3> value_scales() const { return {vs_, {num_pages_, 1, page_size_}}; }

  /// Every page as (num_pages, 1 head, page_size, d): what paged_kv reads.
  tensor_view<const T, 4> keys() const { return tensor_view<const T, 4>(k_, {num_pages_, 1, page_size_, d_}); }
  tensor_view<const T, 4> values() const { return tensor_view<const T, 4>(v_, {num_pages_, 1, page_size_, dv_}); }

 private:
  static std::size_t scale_bytes(std::int64_t num_pages, std::int64_t page_size) {
    return row_scales ? static_cast<std::size_t>(2 * num_pages * page_size) * sizeof(float) : 0;
  }

  std::int64_t num_pages_, page_size_, d_, dv_;
  std::vector<float> own_;  // float-aligned for the scales; T is at most 4 bytes
  float *ks_ = nullptr, *vs_ = nullptr;
  T *k_ = nullptr, *v_ = nullptr;
  std::vector<std::int32_t> refs_;  // holders of each page; 0: free
  std::vector<std::int32_t> free_;  // capacity num_pages: never reallocates
};

}  // namespace detail
ATTNKIT_END_NAMESPACE
