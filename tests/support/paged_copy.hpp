// Test helpers for paged KV: a contiguous K or V copied into a shuffled page
// pool, and a two-thread executor (serial without OpenMP).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "attnkit/core/dtype.hpp"
#include "attnkit/core/paged_view.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/tensor.hpp"

namespace attnkit::test {

inline executor two_threads() {
#if defined(_OPENMP)
  return executor::openmp(2);
#else
  return executor::serial();
#endif
}

/// The block table of sequences of these lengths over pages drawn in a random
/// order from a pool of num_pages (a few more than the table uses).
struct shuffled_table {
  std::vector<std::int32_t> indptr, indices, last;
  std::int64_t num_pages = 0;

  shuffled_table(const std::vector<std::int64_t>& lengths, std::int64_t page_size, std::mt19937_64& rng) {
    indptr.push_back(0);
    for (const std::int64_t len : lengths) {
      const std::int64_t pages = (len + page_size - 1) / page_size;
      indptr.push_back(static_cast<std::int32_t>(indptr.back() + pages));
      last.push_back(static_cast<std::int32_t>(pages == 0 ? 0 : len - (pages - 1) * page_size));
    }
    const std::int64_t used = indptr.back();
    num_pages = used + 3;  // a few pages nobody uses
    std::vector<std::int32_t> ids(num_pages);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    indices.assign(ids.begin(), ids.begin() + used);
  }

  block_table view() const {
    const std::int64_t b = static_cast<std::int64_t>(last.size());
    return {tensor_view<const std::int32_t, 1>(indptr.data(), {b + 1}),
            tensor_view<const std::int32_t, 1>(indices.data(), {static_cast<std::int64_t>(indices.size())}),
            tensor_view<const std::int32_t, 1>(last.data(), {b})};
  }
  /// The page that holds row j of sequence i.
  std::int64_t page(std::int64_t i, std::int64_t j, std::int64_t page_size) const {
    return indices[indptr[i] + j / page_size];
  }
};

/// K or V of a contiguous (b, hkv, skv, d) tensor copied into a shuffled page pool.
template <class T>
struct paged_copy {
  tensor<T, 4> pool;  // (num_pages, hkv, page_size, d)
  shuffled_table table;
  paged_kv<const T> view;

  paged_copy(tensor_view<const T, 4> src, const std::vector<std::int64_t>& lengths, std::int64_t page_size,
             std::mt19937_64& rng)
      : pool({1, 1, 1, 1}), table(lengths, page_size, rng) {
    const std::int64_t b = src.extent(0), hkv = src.extent(1), d = src.extent(3);
    pool = tensor<T, 4>({table.num_pages, hkv, page_size, d}, from_float<T>(std::nanf("")));
    for (std::int64_t i = 0; i < b; ++i)
      for (std::int64_t h = 0; h < hkv; ++h)
        for (std::int64_t j = 0; j < lengths[i]; ++j)
          for (std::int64_t x = 0; x < d; ++x) pool(table.page(i, j, page_size), h, j % page_size, x) = src(i, h, j, x);
    view.pages = pool.cview();
    view.table = table.view();
  }
};

}  // namespace attnkit::test
