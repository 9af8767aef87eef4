// kv_cache: one layer's keys and values for one sequence, per KV head, with
// each row's position and a length per head (heads may keep different tokens).
// It is a kv_pool (kv/pool.hpp) of one sequence and one layer, for callers
// that hold one sequence; engines serving many share one kv_pool instead.
//
// Two ways to size it, one interface:
//   contiguous  capacity rows per head, reserved up front
//   paged       num_pages pages of page_size rows that the heads share; a head
//               takes pages as it grows and compaction gives whole pages back
// keys() and values() are paged_kv views with one sequence per KV head, which
// flash_attention reads directly (attnkit/cached_attention.hpp makes that
// call), so heads of different lengths need one call, not one per head.
//
// append adds tokens to every head; a cache without room is an error, never an
// overwrite. compact keeps the rows of a keep_set (from a policy) in order, in
// place, and in position_mode::in_cache with a rope given, rotates each moved
// key from its old position to its new one.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/kv_scales.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/pool.hpp"
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
  std::vector<float> k_scales, v_scales;  ///< fp8 caches: one scale per KV head; empty: all 1
};

template <class T>
class kv_cache {
 public:
  explicit kv_cache(const kv_cache_options& opt) : opt_(checked(opt)), pool_(pool_options(opt_)) {
    id_ = pool_.add_sequence();
    refresh();
  }

  const token_index& index() const { return pool_.index(id_, 0); }
  std::int64_t heads() const { return opt_.hkv; }
  std::int64_t dim() const { return opt_.d; }
  std::int64_t value_dim() const { return pool_.options().dv; }
  bool paged() const { return opt_.page_size != 0; }
  std::int64_t page_size() const { return pool_.options().page_size; }
  /// Pages holding rows.
  std::int64_t pages_in_use() const { return pool_.pages_in_use(); }

  /// Rows head h can still take: up to capacity (contiguous), or what its last
  /// page has left plus the whole free pool (paged).
  std::int64_t room(std::int64_t h) const {
    if (!paged()) return opt_.capacity - index().length(h);
    return (pool_.pages_of(id_, 0, h) + pool_.free_pages()) * page_size() - index().length(h);
  }

  /// Appends n tokens to every head: k (hkv, n, d) and v (hkv, n, dv), any element type.
  template <class U, class W>
  void append(tensor_view<U, 3> k, tensor_view<W, 3> v) {
    for (std::int64_t h = 0; h < opt_.hkv && !paged() && k.extent(0) == opt_.hkv; ++h)
      ATTNKIT_CHECK(k.extent(1) <= room(h), "kv_cache::append: head ", h, " holds ", index().length(h), " of ",
                    opt_.capacity, " rows and cannot take ", k.extent(1),
                    " more (evict first, or size the cache for the budget)");
    pool_.append(id_, 0, k, v);
    refresh();
  }

  /// Keeps, per head, the rows keep.heads[h] (increasing, each < length(h)) in
  /// that order at rows 0, 1, ...; frees the pages past the new end.
  void compact(const keep_set& keep) {
    pool_.compact(id_, 0, keep);
    refresh();
  }

  /// Keys as one sequence per KV head: (b = hkv) sequences, each of 1 head and length(h) rows.
  /// Valid until the next append or compact.
  paged_kv<const T> keys() const { return pool_.keys(batch_); }
  paged_kv<const T> values() const { return pool_.values(batch_); }
  /// Their scales (int8 and fp8 caches; empty for float types): kv_scales.hpp.
  kv_scales key_scales() const { return pool_.key_scales(batch_); }
  kv_scales value_scales() const { return pool_.value_scales(batch_); }

  const T* key_row(std::int64_t h, std::int64_t j) const { return pool_.key_row(id_, 0, h, j); }
  const T* value_row(std::int64_t h, std::int64_t j) const { return pool_.value_row(id_, 0, h, j); }

 private:
  /// The options with dv filled in, each checked before anything is allocated.
  static kv_cache_options checked(kv_cache_options opt) {
    constexpr const char* fn = "kv_cache";
    if (opt.page_size == 0)
      ATTNKIT_CHECK(opt.capacity > 0 && opt.capacity <= INT32_MAX, fn, ": capacity must be in [1, 2^31), got ",
                    opt.capacity);
    ATTNKIT_CHECK(opt.hkv > 0 && opt.hkv <= INT32_MAX, fn, ": hkv must be in [1, 2^31), got ", opt.hkv);
    return opt;
  }

  /// Contiguous: rows per head rounded up to 16 split into equal pages, enough for every head's capacity.
  static kv_pool_options pool_options(const kv_cache_options& opt) {
    kv_pool_options p;
    p.hkv = opt.hkv;
    p.d = opt.d;
    p.dv = opt.dv;
    p.positions = opt.positions;
    p.rerotate = opt.rerotate;
    p.k_scales = opt.k_scales;
    p.v_scales = opt.v_scales;
    p.page_size = opt.page_size;
    p.num_pages = opt.num_pages;
    if (opt.page_size == 0) {
      const std::int64_t rows = (opt.capacity + 15) / 16 * 16;
      p.page_size = 256;
      while (rows % p.page_size != 0) p.page_size /= 2;
      p.num_pages = opt.hkv * (rows / p.page_size);  // <= 2^31 * 2^27: no overflow
      ATTNKIT_CHECK(p.num_pages <= INT32_MAX, "kv_cache: hkv * capacity is too large (", p.num_pages, " pages of ",
                    p.page_size, " rows; at most 2^31 - 1)");
    }
    return p;
  }

  void refresh() { pool_.gather(0, {id_}, batch_); }

  kv_cache_options opt_;
  kv_pool<T> pool_;
  typename kv_pool<T>::sequence_id id_ = 0;
  kv_batch batch_;
};

ATTNKIT_END_NAMESPACE
