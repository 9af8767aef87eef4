// kv_cache: one layer's keys and values for one sequence, per KV head, with each
// row's position and a length per head (heads may keep different tokens).
//
// Two layouts, one interface:
//   contiguous  K and V are [hkv][capacity][d]; head h owns its rows for good
//   paged       rows live in pages of a pool the heads share; a head takes pages
//               as it grows and compaction gives whole pages back
// Either way keys() and values() are paged_kv views with one sequence per KV
// head, which flash_attention reads directly (attnkit/cached_attention.hpp
// makes that call), so heads of different lengths need one call, not one per head.
//
// append adds tokens to every head; a cache without room is an error, never an
// overwrite. compact keeps the rows of a keep_set (from a policy) in order, in
// place, and in position_mode::in_cache with a rope given, rotates each moved
// key from its old position to its new one.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <type_traits>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/tensor.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/view_checks.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/rope.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct kv_cache_options {
  std::int64_t hkv = 0;        ///< KV heads, > 0
  std::int64_t d = 0;          ///< key dim, > 0
  std::int64_t dv = 0;         ///< value dim; 0: d
  std::int64_t capacity = 0;   ///< contiguous: rows per head, > 0
  std::int64_t page_size = 0;  ///< 0: contiguous; else paged with pages of this many rows (a power of two <= 256)
  std::int64_t num_pages = 0;  ///< paged: pages in the pool, shared by all heads
  position_mode positions = position_mode::original;
  std::optional<rope> rerotate;  ///< in_cache only: keys are stored rotated; compaction re-rotates moved keys
};

template <class T>
class kv_cache {
  static_assert(is_element_type_v<T>, "kv_cache holds float, half or bfloat16");

 public:
  explicit kv_cache(const kv_cache_options& opt) : opt_(checked(opt)), index_(opt_.hkv, opt_.positions) {
    std::int64_t pages_per_head = 0;
    if (paged()) {
      page_size_ = opt_.page_size;
      num_pages_ = opt_.num_pages;
    } else {
      // Rows per head rounded up to 16 so the head's block of rows splits into equal pages.
      const std::int64_t rows = (opt_.capacity + 15) / 16 * 16;
      page_size_ = 256;
      while (rows % page_size_ != 0) page_size_ /= 2;
      pages_per_head = rows / page_size_;
      num_pages_ = opt_.hkv * pages_per_head;  // <= 2^31 * 2^27: no overflow
      ATTNKIT_CHECK(num_pages_ <= INT32_MAX, "kv_cache: hkv * capacity is too large (", num_pages_,
                    " pages of ", page_size_, " rows; at most 2^31 - 1)");
    }
    k_pool_ = tensor<T, 2>({num_pages_ * page_size_, opt_.d});  // [hkv][rows][d] when contiguous
    v_pool_ = tensor<T, 2>({num_pages_ * page_size_, opt_.dv});
    if (paged()) free_.resize(static_cast<std::size_t>(num_pages_));  // after the pools: a failed allocation costs nothing
    for (std::int64_t p = 0; p < static_cast<std::int64_t>(free_.size()); ++p)
      free_[p] = static_cast<std::int32_t>(num_pages_ - 1 - p);
    pages_.resize(static_cast<std::size_t>(opt_.hkv));
    for (std::int64_t h = 0; h < opt_.hkv && !paged(); ++h)
      for (std::int64_t p = 0; p < pages_per_head; ++p) pages_[h].push_back(static_cast<std::int32_t>(h * pages_per_head + p));
    rebuild_table();
  }

  const token_index& index() const { return index_; }
  std::int64_t heads() const { return opt_.hkv; }
  std::int64_t dim() const { return opt_.d; }
  std::int64_t value_dim() const { return opt_.dv; }
  bool paged() const { return opt_.page_size != 0; }
  std::int64_t page_size() const { return page_size_; }
  /// Pages holding rows (paged) or reserved (contiguous: all of them).
  std::int64_t pages_in_use() const { return num_pages_ - static_cast<std::int64_t>(free_.size()); }

  /// Rows head h can still take: up to capacity (contiguous), or what its last
  /// page has left plus the whole free pool (paged).
  std::int64_t room(std::int64_t h) const {
    if (!paged()) return opt_.capacity - index_.length(h);
    return (static_cast<std::int64_t>(pages_[h].size() + free_.size())) * page_size_ - index_.length(h);
  }

  /// Appends n tokens to every head: k (hkv, n, d) and v (hkv, n, dv), any element type.
  template <class U, class W>
  void append(tensor_view<U, 3> k, tensor_view<W, 3> v) {
    constexpr const char* fn = "kv_cache::append";
    detail::check_view(fn, "k", k, false);
    detail::check_view(fn, "v", v, false);
    const std::int64_t n = k.extent(1);
    ATTNKIT_CHECK(n < INT32_MAX, fn, ": k.extent(1) (tokens) must be below 2^31, got ", n);
    ATTNKIT_CHECK(k.extent(0) == opt_.hkv && v.extent(0) == opt_.hkv, fn, ": k and v must have extent(0) = hkv = ",
                  opt_.hkv, ", got ", k.extent(0), " and ", v.extent(0));
    ATTNKIT_CHECK(v.extent(1) == n, fn, ": v.extent(1) must equal k.extent(1) = ", n, ", got ", v.extent(1));
    ATTNKIT_CHECK(k.extent(2) == opt_.d && v.extent(2) == opt_.dv, fn, ": k.extent(2) and v.extent(2) must be d = ",
                  opt_.d, " and dv = ", opt_.dv, ", got ", k.extent(2), " and ", v.extent(2));
    std::int64_t pages_needed = 0;
    for (std::int64_t h = 0; h < opt_.hkv; ++h) {
      const std::int64_t len = index_.length(h);
      if (!paged()) {
        ATTNKIT_CHECK(n <= opt_.capacity - len, fn, ": head ", h, " holds ", len, " of ", opt_.capacity,
                      " rows and cannot take ", n, " more (evict first, or size the cache for the budget)");
      } else {
        pages_needed += (len + n + page_size_ - 1) / page_size_ - static_cast<std::int64_t>(pages_[h].size());
      }
    }
    ATTNKIT_CHECK(pages_needed <= static_cast<std::int64_t>(free_.size()), fn, ": the pool has ", free_.size(),
                  " free pages and ", n, " more rows per head need ", pages_needed,
                  " (evict first, or give the pool more pages)");
    for (std::int64_t h = 0; h < opt_.hkv; ++h) {
      const std::int64_t len = index_.length(h);
      while (static_cast<std::int64_t>(pages_[h].size()) * page_size_ < len + n) {
        pages_[h].push_back(free_.back());
        free_.pop_back();
      }
      for (std::int64_t i = 0; i < n; ++i) {
        copy_row(&k(h, i, 0), k.stride(2), key_row(h, len + i), opt_.d);
        copy_row(&v(h, i, 0), v.stride(2), value_row(h, len + i), opt_.dv);
      }
    }
    index_.append(n);
    rebuild_table();
  }

  /// Keeps, per head, the rows keep.heads[h] (increasing, each < length(h)) in
  /// that order at rows 0, 1, ...; frees the pages past the new end (paged).
  void compact(const keep_set& keep) {
    constexpr const char* fn = "kv_cache::compact";
    ATTNKIT_CHECK(static_cast<std::int64_t>(keep.heads.size()) == opt_.hkv, fn, ": keep_set has ",
                  keep.heads.size(), " heads, the cache ", opt_.hkv);
    for (std::int64_t h = 0; h < opt_.hkv; ++h) {
      const std::vector<std::int64_t>& kept = keep.heads[h];
      for (std::size_t r = 0; r < kept.size(); ++r)
        ATTNKIT_CHECK(kept[r] >= 0 && kept[r] < index_.length(h) && (r == 0 || kept[r] > kept[r - 1]), fn,
                      ": keep_set head ", h, " entry ", r, " = ", kept[r],
                      " must be a row < length = ", index_.length(h), " and above the entry before it");
    }
    std::map<std::int64_t, rope_rotation> rotations;  // by shift; one per distinct shift, not per row
    for (std::int64_t h = 0; h < opt_.hkv; ++h) {
      const std::vector<std::int64_t>& kept = keep.heads[h];
      for (std::int64_t r = 0; r < static_cast<std::int64_t>(kept.size()); ++r) {
        const std::int64_t src = kept[r];
        if (src == r) continue;  // rows before the first eviction stay put
        std::memcpy(key_row(h, r), key_row(h, src), sizeof(T) * opt_.d);
        std::memcpy(value_row(h, r), value_row(h, src), sizeof(T) * opt_.dv);
        if (opt_.rerotate) {
          const std::int64_t shift = r - index_.position(h, src);
          auto it = rotations.find(shift);
          if (it == rotations.end())
            it = rotations.emplace(shift, rope_rotation(static_cast<double>(shift), opt_.d, *opt_.rerotate)).first;
          it->second.apply(key_row(h, r));
        }
      }
      index_.retain(h, kept);
      while (paged() && static_cast<std::int64_t>(pages_[h].size()) * page_size_ >= index_.length(h) + page_size_) {
        free_.push_back(pages_[h].back());
        pages_[h].pop_back();
      }
    }
    rebuild_table();
  }

  /// Keys as one sequence per KV head: (b = hkv) sequences, each of 1 head and length(h) rows.
  /// Valid until the next append or compact.
  paged_kv<const T> keys() const { return {pool_view(k_pool_, opt_.d), table()}; }
  paged_kv<const T> values() const { return {pool_view(v_pool_, opt_.dv), table()}; }

  T* key_row(std::int64_t h, std::int64_t j) const { return k_pool_.data() + slot(h, j) * opt_.d; }
  T* value_row(std::int64_t h, std::int64_t j) const { return v_pool_.data() + slot(h, j) * opt_.dv; }

 private:
  /// The options with dv filled in, each checked before anything is allocated.
  static kv_cache_options checked(kv_cache_options opt) {
    constexpr const char* fn = "kv_cache";
    constexpr std::int64_t most = INT32_MAX;  // page ids, rows and heads are int32 in the block table
    if (opt.dv == 0) opt.dv = opt.d;
    ATTNKIT_CHECK(opt.hkv > 0 && opt.hkv <= most, fn, ": hkv must be in [1, 2^31), got ", opt.hkv);
    ATTNKIT_CHECK(opt.d > 0 && opt.dv > 0 && opt.d <= most && opt.dv <= most, fn,
                  ": d and dv must be in [1, 2^31), got ", opt.d, " and ", opt.dv);
    ATTNKIT_CHECK(!opt.rerotate || opt.positions == position_mode::in_cache, fn,
                  ": rerotate needs positions = in_cache (original positions never move)");
    if (opt.rerotate) detail::check_rope(fn, *opt.rerotate, opt.d);
    if (opt.page_size != 0) {
      const std::int64_t ps = opt.page_size;
      ATTNKIT_CHECK(ps >= 1 && ps <= 256 && (ps & (ps - 1)) == 0, fn,
                    ": page_size must be 0 (contiguous) or a power of two in [1, 256], got ", ps);
      ATTNKIT_CHECK(opt.num_pages > 0 && opt.num_pages <= most, fn, ": num_pages must be in [1, 2^31), got ",
                    opt.num_pages);
    } else {
      ATTNKIT_CHECK(opt.capacity > 0 && opt.capacity <= most, fn, ": capacity must be in [1, 2^31), got ",
                    opt.capacity);
    }
    return opt;
  }

  std::int64_t slot(std::int64_t h, std::int64_t j) const {
    return static_cast<std::int64_t>(pages_[h][j / page_size_]) * page_size_ + j % page_size_;
  }

  template <class U>
  static void copy_row(const U* src, std::int64_t stride, T* dst, std::int64_t n) {
    for (std::int64_t x = 0; x < n; ++x) dst[x] = from_float<T>(to_float(src[x * stride]));
  }

  tensor_view<const T, 4> pool_view(const tensor<T, 2>& pool, std::int64_t width) const {
    return tensor_view<const T, 4>(pool.data(), {num_pages_, 1, page_size_, width});  // (num_pages, 1, page_size, d)
  }

  block_table table() const {
    const std::int64_t h = opt_.hkv;
    return {tensor_view<const std::int32_t, 1>(indptr_.data(), {h + 1}),
            tensor_view<const std::int32_t, 1>(indices_.data(), {static_cast<std::int64_t>(indices_.size())}),
            tensor_view<const std::int32_t, 1>(last_.data(), {h})};
  }

  void rebuild_table() {
    indptr_.assign(1, 0);
    indices_.clear();
    last_.clear();
    for (std::int64_t h = 0; h < opt_.hkv; ++h) {
      const std::int64_t len = index_.length(h), used = (len + page_size_ - 1) / page_size_;
      indices_.insert(indices_.end(), pages_[h].begin(), pages_[h].begin() + used);
      indptr_.push_back(static_cast<std::int32_t>(indices_.size()));
      last_.push_back(static_cast<std::int32_t>(len - (used - 1) * page_size_) * (used > 0));
    }
  }

  kv_cache_options opt_;
  token_index index_;
  std::int64_t page_size_ = 0, num_pages_ = 0;
  tensor<T, 2> k_pool_, v_pool_;                 // (num_pages * page_size, d) and (..., dv)
  std::vector<std::vector<std::int32_t>> pages_;  // per head: its pages in order
  std::vector<std::int32_t> free_;               // paged: pages no head holds
  std::vector<std::int32_t> indptr_, indices_, last_;
};

ATTNKIT_END_NAMESPACE
