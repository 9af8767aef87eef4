// kv_pool: the KV cache of an engine. One pool of pages (kv/page_pool.hpp)
// serves every sequence and every layer; per (sequence, layer) each KV head has
// its own table of pages and its own rows (token_index: length and each row's
// position), so heads may keep different tokens (H2O per head, DuoAttention).
//
//   kv_pool<half> pool(opt);                     // or kv_pool<half>(opt, memory, bytes): the engine's memory
//   auto s = pool.add_sequence();
//   pool.append(s, layer, k, v);                 // k (hkv, n, d), v (hkv, n, dv)
//   pool.gather(layer, ids, batch);              // block tables of a batch: what pool_attention reads (attnkit/cached_attention.hpp)
//
// Lifecycle: reset (empty the sequence), truncate (speculative rollback to the
// first n tokens), fork (a copy that shares every page; a page is copied the
// first time either side writes into it), remove_sequence. Each costs the
// pages it touches (fork also copies the row positions, 8 bytes a row); taking
// and releasing a page allocates nothing. Every error is raised before
// anything changes.
//
// Quantized pools (kv_pool<std::int8_t>, kv_pool<fp8_e4m3>, kv_pool<fp8_e5m2>)
// quantize on append (kv/quantize.hpp's rules): int8 keeps each row's scale
// beside it in the page, fp8 takes one scale per (layer, KV head) from the
// options. Compaction and copy on write move rows with their scales; a
// re-rotated int8 or fp8 key is dequantized, rotated and quantized again, so
// the rounding compounds with each move (a key moved at every step drifts:
// quantized caches suit original positions, or eviction in batches).
//
// A page holds one KV head's rows (not every head's): heads that keep
// different rows take pages independently, and eviction returns whole pages.
// The pool is not thread-safe; one call at a time.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <type_traits>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/kv_scales.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/core/view_checks.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/page_pool.hpp"
#include "attnkit/kv/quantize.hpp"
#include "attnkit/kv/rope.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

struct kv_pool_options {
  std::int64_t layers = 1;         ///< layers each sequence caches, > 0
  std::int64_t hkv = 0;            ///< KV heads, > 0
  std::int64_t d = 0;              ///< key dim, > 0
  std::int64_t dv = 0;             ///< value dim; 0: d
  std::int64_t page_size = 16;     ///< rows of one head per page: a power of two <= 256
  std::int64_t num_pages = 0;      ///< pages in the pool, > 0
  std::int64_t max_sequences = 1;  ///< sequences alive at once, > 0
  position_mode positions = position_mode::original;
  std::optional<rope> rerotate;    ///< in_cache only: keys are stored rotated; compaction re-rotates moved keys
  std::vector<float> k_scales, v_scales;  ///< fp8 pools: (layers * hkv) scales, layer-major, finite > 0; empty: all 1
};

/// The block tables of a batch of sequences at one layer, one entry per
/// (KV head, sequence): entry h * sequences + s. Reused across calls, so a
/// steady engine stops allocating.
struct kv_batch {
  std::int64_t sequences = 0, heads = 0;
  std::vector<std::int32_t> indptr, indices, last;
  std::vector<float> k_heads, v_heads;  // fp8 pools: each entry's scale

  block_table table() const {
    const std::int64_t n = sequences * heads;
    return {tensor_view<const std::int32_t, 1>(indptr.data(), {n + 1}),
            tensor_view<const std::int32_t, 1>(indices.data(), {static_cast<std::int64_t>(indices.size())}),
            tensor_view<const std::int32_t, 1>(last.data(), {n})};
  }
};

template <class T>
class kv_pool {
  static_assert(is_kv_type_v<T>, "kv_pool holds float, half, bfloat16, int8, fp8_e4m3 or fp8_e5m2");
  static constexpr bool row_scales = std::is_same_v<T, std::int8_t>;
  static constexpr bool head_scales = std::is_same_v<T, fp8_e4m3> || std::is_same_v<T, fp8_e5m2>;

 public:
  using sequence_id = std::int64_t;

  /// Bytes of engine memory a pool of these options takes.
  static std::size_t memory_bytes(const kv_pool_options& opt) {
    const kv_pool_options o = checked(opt);
    return detail::page_pool<T>::bytes(o.num_pages, o.page_size, o.d, o.dv);
  }

  /// A pool that allocates its pages once, here.
  explicit kv_pool(const kv_pool_options& opt) : kv_pool(opt, nullptr, 0) {}

  /// A pool on the engine's memory: at least memory_bytes(opt) bytes, aligned for
  /// T (for float with int8), outliving the pool. Null memory: allocate here.
  kv_pool(const kv_pool_options& opt, void* memory, std::size_t bytes)
      : opt_(checked(opt)), pages_(opt_.num_pages, opt_.page_size, opt_.d, opt_.dv, checked_memory(memory, bytes)) {
    layer_cache empty{token_index(opt_.hkv, opt_.positions), std::vector<std::vector<std::int32_t>>(opt_.hkv)};
    sequences_.assign(static_cast<std::size_t>(opt_.max_sequences),
                      sequence{false, std::vector<layer_cache>(static_cast<std::size_t>(opt_.layers), empty)});
    for (sequence_id s = opt_.max_sequences - 1; s >= 0; --s) free_ids_.push_back(s);
  }

  const kv_pool_options& options() const { return opt_; }
  std::int64_t free_pages() const { return pages_.free_pages(); }
  std::int64_t pages_in_use() const { return opt_.num_pages - pages_.free_pages(); }
  bool contains(sequence_id s) const {
    return s >= 0 && s < opt_.max_sequences && sequences_[static_cast<std::size_t>(s)].live;
  }
  const token_index& index(sequence_id s, std::int64_t layer) const { return at(s, layer, "kv_pool::index").index; }

  /// A new empty sequence.
  sequence_id add_sequence() {
    ATTNKIT_CHECK(!free_ids_.empty(), "kv_pool::add_sequence: all max_sequences = ", opt_.max_sequences,
                  " sequences are in use (remove one, or raise max_sequences)");
    const sequence_id s = free_ids_.back();
    free_ids_.pop_back();
    sequences_[static_cast<std::size_t>(s)].live = true;
    return s;
  }

  /// Gives every page of s back and retires its id (add_sequence may hand it out again).
  void remove_sequence(sequence_id s) {
    reset(s);
    sequences_[static_cast<std::size_t>(s)].live = false;
    free_ids_.push_back(s);
  }

  /// Empties every layer of s.
  void reset(sequence_id s) {
    check_live("kv_pool::reset", s);
    for (layer_cache& lc : sequences_[static_cast<std::size_t>(s)].layers) {
      for (auto& table : lc.pages) release_from(table, 0);
      lc.index = token_index(opt_.hkv, opt_.positions);
    }
  }

  /// Rolls every layer of s back to its first n tokens (speculative decoding
  /// rejects the rest). n is at most the tokens appended to each layer, and
  /// in position_mode::in_cache no older than the layer's last compaction.
  void truncate(sequence_id s, std::int64_t n) {
    constexpr const char* fn = "kv_pool::truncate";
    check_live(fn, s);
    std::vector<layer_cache>& layers = sequences_[static_cast<std::size_t>(s)].layers;
    for (std::size_t l = 0; l < layers.size(); ++l) {
      const token_index& ix = layers[l].index;
      ATTNKIT_CHECK(n >= ix.truncate_floor() && n <= ix.seen(), fn, ": sequence ", s, " layer ", l, " holds tokens [",
                    ix.truncate_floor(), ", ", ix.seen(), "] a truncation can keep, asked to keep ", n);
    }
    for (layer_cache& lc : layers) {
      for (std::int64_t h = 0; h < opt_.hkv; ++h)
        release_from(lc.pages[h], pages_for(lc.index.length_after_truncate(h, n)));
      lc.index.truncate(n);
    }
  }

  /// Makes `into` a copy of `from` that shares all of its pages (into's own are released).
  void fork(sequence_id from, sequence_id into) {
    constexpr const char* fn = "kv_pool::fork";
    check_live(fn, from);
    check_live(fn, into);
    ATTNKIT_CHECK(from != into, fn, ": cannot fork sequence ", from, " into itself");
    reset(into);
    std::vector<layer_cache>& dst = sequences_[static_cast<std::size_t>(into)].layers;
    dst = sequences_[static_cast<std::size_t>(from)].layers;
    for (layer_cache& lc : dst)
      for (auto& table : lc.pages)
        for (std::int32_t p : table) pages_.share(p);
  }

  /// Appends n tokens to every head of sequence s at `layer`: k (hkv, n, d) and v (hkv, n, dv), any element type.
  template <class U, class W>
  void append(sequence_id s, std::int64_t layer, tensor_view<U, 3> k, tensor_view<W, 3> v) {
    constexpr const char* fn = "kv_pool::append";
    layer_cache& lc = at(s, layer, fn);
    const std::int64_t n = check_rows(fn, k, v);
    if (row_scales) check_finite(fn, k, v);
    std::int64_t needed = 0;
    for (std::int64_t h = 0; h < opt_.hkv; ++h) {
      const std::int64_t len = lc.index.length(h);
      needed += pages_for(len + n) - static_cast<std::int64_t>(lc.pages[h].size());
      needed += n > 0 && len % opt_.page_size != 0 && pages_.shared(lc.pages[h].back());  // copy on write
    }
    ATTNKIT_CHECK(needed <= pages_.free_pages(), fn, ": sequence ", s, " layer ", layer, " needs ", needed,
                  " pages for ", n, " more rows per head and the pool has ", pages_.free_pages(),
                  " free (evict, remove a sequence, or give the pool more pages)");
    for (std::int64_t h = 0; h < opt_.hkv; ++h) {
      const std::int64_t len = lc.index.length(h);
      std::vector<std::int32_t>& table = lc.pages[h];
      if (n > 0) unshare(table, len / opt_.page_size, len);
      while (static_cast<std::int64_t>(table.size()) < pages_for(len + n)) table.push_back(pages_.take());
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t j = len + i;
        store_row(&k(h, i, 0), k.stride(2), key_row(table, j), opt_.d, key_scale(table, j), head_scale(0, layer, h));
        store_row(&v(h, i, 0), v.stride(2), value_row(table, j), opt_.dv, value_scale(table, j),
                  head_scale(1, layer, h));
      }
    }
    lc.index.append(n);
  }

  /// Keeps, per head, the rows keep.heads[h] (increasing, each < length) of
  /// sequence s at `layer`, in that order at rows 0, 1, ...; whole pages past
  /// the new end go back to the pool. With rerotate (in_cache), moved keys are
  /// rotated from their old position to their new one.
  void compact(sequence_id s, std::int64_t layer, const keep_set& keep) {
    constexpr const char* fn = "kv_pool::compact";
    layer_cache& lc = at(s, layer, fn);
    check_keep(fn, lc.index, keep);
    std::int64_t needed = 0;  // shared pages that rows move into
    for (std::int64_t h = 0; h < opt_.hkv; ++h)
      for (std::int64_t p = first_moved(keep.heads[h]) / opt_.page_size; p < pages_for(moved_end(keep.heads[h])); ++p)
        needed += pages_.shared(lc.pages[h][p]);
    ATTNKIT_CHECK(needed <= pages_.free_pages(), fn, ": sequence ", s, " layer ", layer, " must copy ", needed,
                  " shared pages and the pool has ", pages_.free_pages(), " free");
    std::map<std::int64_t, rope_rotation> rotations;  // by shift; one per distinct shift, not per row
    for (std::int64_t h = 0; h < opt_.hkv; ++h) {
      const std::vector<std::int64_t>& kept = keep.heads[h];
      std::vector<std::int32_t>& table = lc.pages[h];
      const std::int64_t first = first_moved(kept), end = moved_end(kept);
      for (std::int64_t p = first / opt_.page_size; p < pages_for(end); ++p) unshare(table, p, lc.index.length(h));
      for (std::int64_t r = first, n = 0; r < end; r += n) {
        // A run of kept rows that are consecutive, and within one page at both ends, moves in one copy.
        const std::int64_t src = kept[r], ps = opt_.page_size;
        const std::int64_t most = std::min({ps - r % ps, ps - src % ps, end - r});
        for (n = 1; n < most && kept[r + n] == src + n;) ++n;
        std::memmove(key_row(table, r), key_row(table, src), sizeof(T) * static_cast<std::size_t>(n * opt_.d));
        std::memmove(value_row(table, r), value_row(table, src), sizeof(T) * static_cast<std::size_t>(n * opt_.dv));
        if (row_scales) {
          std::memmove(key_scale(table, r), key_scale(table, src), sizeof(float) * static_cast<std::size_t>(n));
          std::memmove(value_scale(table, r), value_scale(table, src), sizeof(float) * static_cast<std::size_t>(n));
        }
        for (std::int64_t i = 0; i < n && opt_.rerotate; ++i) {
          const std::int64_t shift = r + i - lc.index.position(h, src + i);
          auto it = rotations.find(shift);
          if (it == rotations.end())
            it = rotations.emplace(shift, rope_rotation(static_cast<double>(shift), opt_.d, *opt_.rerotate)).first;
          rotate_key(it->second, table, r + i, head_scale(0, layer, h));
        }
      }
      lc.index.retain(h, kept);
      release_from(table, pages_for(lc.index.length(h)));
    }
  }

  /// Fills `out` with the block tables of sequences ids at `layer`: entry
  /// h * ids.size() + s holds head h of sequence ids[s]. Valid until the next
  /// change to any of them.
  void gather(std::int64_t layer, const std::vector<sequence_id>& ids, kv_batch& out) const {
    constexpr const char* fn = "kv_pool::gather";
    for (const sequence_id s : ids) at(s, layer, fn);
    out.sequences = static_cast<std::int64_t>(ids.size());
    out.heads = opt_.hkv;
    out.indptr.assign(1, 0);
    out.indices.clear();
    out.last.clear();
    out.k_heads.clear();
    out.v_heads.clear();
    for (std::int64_t h = 0; h < opt_.hkv; ++h)
      for (const sequence_id s : ids) {
        const layer_cache& lc = sequences_[static_cast<std::size_t>(s)].layers[static_cast<std::size_t>(layer)];
        const std::int64_t len = lc.index.length(h), used = pages_for(len);
        ATTNKIT_CHECK(static_cast<std::int64_t>(out.indices.size()) + used <= INT32_MAX, fn,
                      ": the batch's tables exceed 2^31 - 1 pages");
        out.indices.insert(out.indices.end(), lc.pages[h].begin(), lc.pages[h].begin() + used);
        out.indptr.push_back(static_cast<std::int32_t>(out.indices.size()));
        out.last.push_back(static_cast<std::int32_t>(used > 0 ? len - (used - 1) * opt_.page_size : 0));
        if (head_scales) {
          out.k_heads.push_back(head_scale(0, layer, h));
          out.v_heads.push_back(head_scale(1, layer, h));
        }
      }
  }

  /// Keys and values of a gathered batch, one paged sequence per table entry.
  paged_kv<const T> keys(const kv_batch& b) const { return {pages_.keys(), b.table()}; }
  paged_kv<const T> values(const kv_batch& b) const { return {pages_.values(), b.table()}; }
  /// Their scales (int8: every row's; fp8: each entry's head scale); empty for float types.
  kv_scales key_scales(const kv_batch& b) const { return scales_of(pages_.key_scales(), b.k_heads, b); }
  kv_scales value_scales(const kv_batch& b) const { return scales_of(pages_.value_scales(), b.v_heads, b); }

  /// Row j of head h of sequence s at `layer` (unchecked; for reading and tests).
  const T* key_row(sequence_id s, std::int64_t layer, std::int64_t h, std::int64_t j) const {
    return key_row(table_of(s, layer, h), j);
  }
  const T* value_row(sequence_id s, std::int64_t layer, std::int64_t h, std::int64_t j) const {
    return value_row(table_of(s, layer, h), j);
  }
  /// The dequantization scale of that row: its own (int8), its head's (fp8), 1 (float types).
  float key_scale(sequence_id s, std::int64_t layer, std::int64_t h, std::int64_t j) const {
    return row_scales ? *key_scale(table_of(s, layer, h), j) : head_scale(0, layer, h);
  }
  float value_scale(sequence_id s, std::int64_t layer, std::int64_t h, std::int64_t j) const {
    return row_scales ? *value_scale(table_of(s, layer, h), j) : head_scale(1, layer, h);
  }
  /// Pages head h of sequence s holds at `layer`.
  std::int64_t pages_of(sequence_id s, std::int64_t layer, std::int64_t h) const {
    return static_cast<std::int64_t>(at(s, layer, "kv_pool::pages_of").pages[h].size());
  }

 private:
  struct layer_cache {
    token_index index;
    std::vector<std::vector<std::int32_t>> pages;  // per KV head: its pages in row order
  };
  struct sequence {
    bool live = false;
    std::vector<layer_cache> layers;
  };

  static kv_pool_options checked(kv_pool_options opt) {
    constexpr const char* fn = "kv_pool";
    constexpr std::int64_t most = INT32_MAX;  // page ids, rows and heads are int32 in block tables
    if (opt.dv == 0) opt.dv = opt.d;
    const std::int64_t counts[] = {opt.layers, opt.hkv, opt.d, opt.dv, opt.num_pages, opt.max_sequences};
    const char* names[] = {"layers", "hkv", "d", "dv", "num_pages", "max_sequences"};
    for (int x = 0; x < 6; ++x)
      ATTNKIT_CHECK(counts[x] > 0 && counts[x] <= most, fn, ": ", names[x], " must be in [1, 2^31), got ", counts[x]);
    const std::int64_t ps = opt.page_size;
    ATTNKIT_CHECK(ps >= 1 && ps <= 256 && (ps & (ps - 1)) == 0, fn,
                  ": page_size must be a power of two in [1, 256], got ", ps);
    ATTNKIT_CHECK(opt.num_pages * ps <= (std::int64_t{1} << 40) / (opt.d + opt.dv), fn, ": num_pages = ", opt.num_pages,
                  " pages of ", ps, " rows of d + dv = ", opt.d + opt.dv, " elements exceed 2^40 elements");
    ATTNKIT_CHECK(!opt.rerotate || opt.positions == position_mode::in_cache, fn,
                  ": rerotate needs positions = in_cache (original positions never move)");
    if (opt.rerotate) detail::check_rope(fn, *opt.rerotate, opt.d);
    for (const std::vector<float>* sc : {&opt.k_scales, &opt.v_scales}) {
      const char* name = sc == &opt.k_scales ? "k_scales" : "v_scales";
      ATTNKIT_CHECK(sc->empty() || (head_scales && static_cast<std::int64_t>(sc->size()) == opt.layers * opt.hkv), fn,
                    ": ", name, " must be empty or, for an fp8 pool, hold layers * hkv = ", opt.layers * opt.hkv,
                    " scales; got ", sc->size(), " for a ", dtype_name<T>(), " pool");
      for (std::size_t x = 0; x < sc->size(); ++x)
        ATTNKIT_CHECK(std::isfinite((*sc)[x]) && (*sc)[x] > 0.0f, fn, ": ", name, "[", x,
                      "] must be finite and > 0, got ", (*sc)[x]);
    }
    return opt;
  }

  void* checked_memory(void* memory, std::size_t bytes) const {
    if (!memory) return nullptr;
    const std::size_t need = detail::page_pool<T>::bytes(opt_.num_pages, opt_.page_size, opt_.d, opt_.dv);
    constexpr std::size_t align = detail::page_pool<T>::alignment;
    ATTNKIT_CHECK(bytes >= need, "kv_pool: the memory given holds ", bytes, " bytes, the pool needs ", need);
    ATTNKIT_CHECK(reinterpret_cast<std::uintptr_t>(memory) % align == 0, "kv_pool: the memory given must be aligned to ",
                  align, " bytes");
    return memory;
  }

  void check_live(const char* fn, sequence_id s) const {
    ATTNKIT_CHECK(contains(s), fn, ": sequence ", s, " is not in the pool");
  }
  const layer_cache& at(sequence_id s, std::int64_t layer, const char* fn) const {
    check_live(fn, s);
    ATTNKIT_CHECK(layer >= 0 && layer < opt_.layers, fn, ": layer ", layer, " is outside [0, ", opt_.layers, ")");
    return sequences_[static_cast<std::size_t>(s)].layers[static_cast<std::size_t>(layer)];
  }
  layer_cache& at(sequence_id s, std::int64_t layer, const char* fn) {
    return const_cast<layer_cache&>(static_cast<const kv_pool&>(*this).at(s, layer, fn));
  }

  template <class U, class W>
  std::int64_t check_rows(const char* fn, const tensor_view<U, 3>& k, const tensor_view<W, 3>& v) const {
    detail::check_view(fn, "k", k, false);
    detail::check_view(fn, "v", v, false);
    const std::int64_t n = k.extent(1);
    ATTNKIT_CHECK(n < INT32_MAX, fn, ": k.extent(1) (tokens) must be below 2^31, got ", n);
    ATTNKIT_CHECK(k.extent(0) == opt_.hkv && v.extent(0) == opt_.hkv, fn, ": k and v must have extent(0) = hkv = ",
                  opt_.hkv, ", got ", k.extent(0), " and ", v.extent(0));
    ATTNKIT_CHECK(v.extent(1) == n, fn, ": v.extent(1) must equal k.extent(1) = ", n, ", got ", v.extent(1));
    ATTNKIT_CHECK(k.extent(2) == opt_.d && v.extent(2) == opt_.dv, fn, ": k.extent(2) and v.extent(2) must be d = ",
                  opt_.d, " and dv = ", opt_.dv, ", got ", k.extent(2), " and ", v.extent(2));
    return n;
  }

  void check_keep(const char* fn, const token_index& index, const keep_set& keep) const {
    ATTNKIT_CHECK(static_cast<std::int64_t>(keep.heads.size()) == opt_.hkv, fn, ": keep_set has ", keep.heads.size(),
                  " heads, the cache ", opt_.hkv);
    for (std::int64_t h = 0; h < opt_.hkv; ++h) {
      const std::vector<std::int64_t>& kept = keep.heads[h];
      for (std::size_t r = 0; r < kept.size(); ++r)
        ATTNKIT_CHECK(kept[r] >= 0 && kept[r] < index.length(h) && (r == 0 || kept[r] > kept[r - 1]), fn,
                      ": keep_set head ", h, " entry ", r, " = ", kept[r],
                      " must be a row < length = ", index.length(h), " and above the entry before it");
    }
  }

  /// The first row a compaction writes (rows before the first eviction stay put), and the end of its writes.
  static std::int64_t first_moved(const std::vector<std::int64_t>& kept) {
    std::int64_t r = 0;
    while (r < static_cast<std::int64_t>(kept.size()) && kept[r] == r) ++r;
    return r;
  }
  static std::int64_t moved_end(const std::vector<std::int64_t>& kept) {
    return static_cast<std::int64_t>(kept.size());
  }

  std::int64_t pages_for(std::int64_t rows) const { return (rows + opt_.page_size - 1) / opt_.page_size; }

  /// Page p of a table made private before a write (its first `len` rows of the table are valid).
  void unshare(std::vector<std::int32_t>& table, std::int64_t p, std::int64_t len) {
    if (p >= static_cast<std::int64_t>(table.size()) || !pages_.shared(table[p])) return;
    table[p] = pages_.copy(table[p], std::min(opt_.page_size, len - p * opt_.page_size));
  }

  void release_from(std::vector<std::int32_t>& table, std::int64_t keep_pages) {
    while (static_cast<std::int64_t>(table.size()) > keep_pages) {
      pages_.release(table.back());
      table.pop_back();
    }
  }

  T* key_row(const std::vector<std::int32_t>& table, std::int64_t j) const {
    return pages_.key_row(table[j / opt_.page_size], j % opt_.page_size);
  }
  T* value_row(const std::vector<std::int32_t>& table, std::int64_t j) const {
    return pages_.value_row(table[j / opt_.page_size], j % opt_.page_size);
  }

  const std::vector<std::int32_t>& table_of(sequence_id s, std::int64_t layer, std::int64_t h) const {
    return sequences_[static_cast<std::size_t>(s)].layers[static_cast<std::size_t>(layer)].pages[h];
  }
  float* key_scale(const std::vector<std::int32_t>& table, std::int64_t j) const {
    return row_scales ? pages_.key_scale(table[j / opt_.page_size], j % opt_.page_size) : nullptr;
  }
  float* value_scale(const std::vector<std::int32_t>& table, std::int64_t j) const {
    return row_scales ? pages_.value_scale(table[j / opt_.page_size], j % opt_.page_size) : nullptr;
  }
  /// fp8: the scale of KV head h at `layer` (which 0: keys, 1: values); 1 for other types.
  float head_scale(int which, std::int64_t layer, std::int64_t h) const {
    const std::vector<float>& sc = which == 0 ? opt_.k_scales : opt_.v_scales;
    return sc.empty() ? 1.0f : sc[static_cast<std::size_t>(layer * opt_.hkv + h)];
  }

  kv_scales scales_of(tensor_view<const float, 3> rows, const std::vector<float>& heads, const kv_batch& b) const {
    kv_scales sc;
    if (row_scales) sc.rows = rows;
    if (head_scales) sc.heads = tensor_view<const float, 2>(heads.data(), {b.sequences * b.heads, 1});
    return sc;
  }

  /// int8 rows must be finite (no int8 code for NaN or inf): checked before anything changes.
  template <class U, class W>
  static void check_finite(const char* fn, const tensor_view<U, 3>& k, const tensor_view<W, 3>& v) {
    const auto check = [&](const auto& t, const char* name) {
      for (std::int64_t h = 0; h < t.extent(0); ++h)
        for (std::int64_t i = 0; i < t.extent(1); ++i)
          for (std::int64_t x = 0; x < t.extent(2); ++x)
            ATTNKIT_CHECK(std::isfinite(to_float(t(h, i, x))), fn, ": ", name, "(", h, ", ", i, ", ", x, ") is ",
                          to_float(t(h, i, x)), "; an int8 pool holds finite values only");
    };
    check(k, "k");
    check(v, "v");
  }

  /// Stores a row of any element type: converted, or quantized (int8 writes its scale to *scale).
  template <class U>
  static void store_row(const U* src, std::int64_t stride, T* dst, std::int64_t n, float* scale, float head) {
    if constexpr (is_quantized_v<T>) {
      const float s = detail::quantize_row<T>("kv_pool::append", src, stride, n, dst, head);
      if (row_scales) *scale = s;
    } else {
      if constexpr (std::is_same_v<std::remove_const_t<U>, T>) {
        if (stride == 1) return static_cast<void>(std::memcpy(dst, src, sizeof(T) * static_cast<std::size_t>(n)));
      }
      for (std::int64_t x = 0; x < n; ++x) dst[x] = from_float<T>(to_float(src[x * stride]));
    }
  }

  /// Rotates key row j in place; a quantized key goes through fp32 and is quantized again.
  void rotate_key(const rope_rotation& rot, const std::vector<std::int32_t>& table, std::int64_t j, float head) {
    if constexpr (is_quantized_v<T>) {
      std::vector<float>& row = rotate_buffer_;
      row.resize(static_cast<std::size_t>(opt_.d));
      const float s = row_scales ? *key_scale(table, j) : head;
      for (std::int64_t x = 0; x < opt_.d; ++x) row[x] = to_float(key_row(table, j)[x]) * s;
      rot.apply(row.data());
      store_row(row.data(), 1, key_row(table, j), opt_.d, key_scale(table, j), head);
    } else {
      rot.apply(key_row(table, j));
    }
  }

  kv_pool_options opt_;
  detail::page_pool<T> pages_;
  std::vector<sequence> sequences_;     // by id
  std::vector<sequence_id> free_ids_;  // ids not in use
  std::vector<float> rotate_buffer_;   // a quantized key on its way through rope_rotation
};

ATTNKIT_END_NAMESPACE
