// Sequences of given lengths in one kv_pool (f16, hkv 8, hq 32, d 128, pages
// of 16 rows), one decode row each: the batch of bench_pool.cpp and the tour's
// kv.pool_batch row.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "attnkit/cached_attention.hpp"
#include "attnkit/kv/pool.hpp"
#include "support/random.hpp"

namespace attnkit::bench {

struct pool_batch {
  static constexpr std::int64_t hkv = 8, hq = 32, d = 128;
  std::int64_t sequences;
  kv_pool<half> pool;
  std::vector<kv_pool<half>::sequence_id> ids;
  std::vector<std::int64_t> cu;  // 0, 1, ..., sequences: one query row each
  tensor<float, 4> q, o;         // (1, hq, sequences, d)
  tensor<float, 3> token{{hkv, 1, d}};
  std::mt19937_64 rng;
  kv_batch all;                // every sequence's tables (gather_all)
  std::vector<kv_batch> each;  // each sequence's alone

  /// n sequences, sequence s with length(s) random rows per head; the pool has
  /// `spare` more pages per head and sequence, and room for one more sequence.
  template <class Length>
  pool_batch(std::int64_t n, Length&& length, std::int64_t spare, std::uint64_t seed)
      : sequences(n), pool(options(n, length, spare)), q({1, hq, n, d}), o({1, hq, n, d}), rng(seed) {
    test::fill_normal(q.data(), q.size(), rng);
    test::fill_normal(token.data(), token.size(), rng);
    for (std::int64_t s = 0; s < n; ++s) {
      ids.push_back(pool.add_sequence());
      tensor<float, 3> k({hkv, length(s), d}), v({hkv, length(s), d});
      test::fill_normal(k.data(), k.size(), rng);
      test::fill_normal(v.data(), v.size(), rng);
      pool.append(ids.back(), 0, k.cview(), v.cview());
    }
    for (std::int64_t s = 0; s <= n; ++s) cu.push_back(s);
  }

  template <class Length>
  static kv_pool_options options(std::int64_t n, Length&& length, std::int64_t spare) {
    kv_pool_options opt;
    opt.hkv = hkv;
    opt.d = d;
    opt.page_size = 16;
    opt.max_sequences = n + 1;
    for (std::int64_t s = 0; s < n; ++s) opt.num_pages += hkv * ((length(s) + 15) / 16 + spare);
    return opt;
  }

  /// Rows over every sequence and KV head.
  double rows() const {
    double r = 0;
    for (auto s : ids)
      for (std::int64_t h = 0; h < hkv; ++h) r += static_cast<double>(pool.index(s, 0).length(h));
    return r;
  }
  double kv_bytes() const { return rows() * 2.0 * d * sizeof(half); }
  double flops() const { return rows() * 4.0 * (hq / hkv) * d; }

  tensor_view<const std::int64_t, 1> cu_of(std::int64_t n) const { return {cu.data(), {n + 1}}; }
  /// Rows [s, s + n) of q or o.
  static tensor_view<float, 4> rows_of(const tensor<float, 4>& t, std::int64_t s, std::int64_t n) {
    return tensor_view<float, 4>(&t(0, 0, s, 0), {1, hq, n, d}, t.view().strides());
  }

  /// The tables decode_batch and decode_each read.
  void gather_all() {
    pool.gather(0, ids, all);
    each.resize(ids.size());
    for (std::size_t s = 0; s < ids.size(); ++s) pool.gather(0, {ids[s]}, each[s]);
  }
  /// One decode step of every sequence: one call, or one call per sequence.
  template <class Backend>
  void decode_batch(const Backend& backend) {
    pool_attention(q.cview(), pool, all, cu_of(sequences), o.view(), {}, {}, {}, backend);
  }
  template <class Backend>
  void decode_each(const Backend& backend) {
    for (std::int64_t s = 0; s < sequences; ++s)
      pool_attention(tensor_view<const float, 4>(rows_of(q, s, 1)), pool, each[s], cu_of(1), rows_of(o, s, 1), {}, {},
                     {}, backend);
  }
};

/// Between 100 and 4000 rows, spread over the batch (100..3941 for 64 sequences).
inline std::int64_t ragged_length(std::int64_t s) { return 100 + (s * 2477) % 3901; }

}  // namespace attnkit::bench
