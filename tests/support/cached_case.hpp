// Shared by the kv tests and the dispatch tests: random cache rows, cache
// layouts, and cached_attention checked against the fp64 oracle per head.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/cached_attention.hpp"
#include "attnkit/kv/cache.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "support/random.hpp"
#include "support/reference_attention.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {

inline tensor<float, 3> random_rows(std::int64_t h, std::int64_t n, std::int64_t d, std::mt19937_64& rng) {
  tensor<float, 3> t({h, n, d});
  fill_normal(t.data(), t.size(), rng);
  return t;
}

inline kv_cache_options layout_options(bool paged, std::int64_t hkv, std::int64_t d, std::int64_t rows) {
  kv_cache_options o;
  o.hkv = hkv;
  o.d = d;
  o.dv = d + 3;
  if (paged) {
    o.page_size = 16;
    o.num_pages = hkv * ((rows + 15) / 16) + 2;
  } else {
    o.capacity = rows;
  }
  return o;
}

/// A random increasing subset of [0, n) of about `fraction` of it.
inline std::vector<std::int64_t> random_subset(std::int64_t n, double fraction, std::mt19937_64& rng) {
  std::bernoulli_distribution keep(fraction);
  std::vector<std::int64_t> s;
  for (std::int64_t j = 0; j < n; ++j)
    if (keep(rng)) s.push_back(j);
  return s;
}

/// cached_attention over a cache whose heads keep different rows (compacted at
/// random) against the fp64 oracle per head: output and key weights.
template <class Backend>
void check_cached_attention(bool paged, const Backend& backend) {
  seeded_rng seeded;
  const std::int64_t hkv = 4, hq = 8, group = hq / hkv, d = 64, n = 300;
  kv_cache_options o = layout_options(paged, hkv, d, n);
  o.dv = d;
  kv_cache<half> cache(o);
  const auto k = random_rows(hkv, n, d, seeded.rng), v = random_rows(hkv, n, d, seeded.rng);
  cache.append(k.cview(), v.cview());
  keep_set keep;
  for (std::int64_t h = 0; h < hkv; ++h) keep.heads.push_back(random_subset(n, 0.2 * (h + 1), seeded.rng));
  cache.compact(keep);
  const std::int64_t longest = cache.index().max_length();
  for (std::int64_t sq : {1, 5, 40}) {
    tensor<float, 4> q({1, hq, sq, d}), out({1, hq, sq, d});
    fill_normal(q.data(), q.size(), seeded.rng);
    tensor<float, 3> weights({1, hkv, longest}, std::nanf(""));
    attention_params params;
    params.causal = true;
    cached_attention(q.cview(), cache, out.view(), params, {}, key_weights{weights.view(), {}},
                     backend);
    for (std::int64_t h = 0; h < hkv; ++h) {
      const std::int64_t len = cache.index().length(h);
      tensor<float, 4> kh({1, 1, len, d}), vh({1, 1, len, d});  // the head's kept rows, as stored (f16)
      for (std::int64_t r = 0; r < len; ++r)
        for (std::int64_t x = 0; x < d; ++x) {
          kh(0, 0, r, x) = to_float(cache.key_row(h, r)[x]);
          vh(0, 0, r, x) = to_float(cache.value_row(h, r)[x]);
        }
      const auto qg = q.cview().slice(1, h * group, (h + 1) * group);  // (1, group, sq, d)
      const reference_result ref = reference_attention(qg, kh.cview(), vh.cview(), params);
      for (std::int64_t g = 0; g < group; ++g)
        for (std::int64_t i = 0; i < sq; ++i)
          for (std::int64_t x = 0; x < d; ++x)
            ASSERT_NEAR(out(0, h * group + g, i, x), ref.out(0, g, i, x), 1e-5) << "head " << h << " row " << i;
      for (std::int64_t j = 0; j < longest; ++j) {
        double want = 0;
        for (std::int64_t g = 0; g < group && j < len; ++g)
          for (std::int64_t i = 0; i < sq; ++i) want += ref.prob(0, g, i, j);
        ASSERT_NEAR(weights(0, h, j), want, 1e-5 * std::max(1.0, want)) << "head " << h << " key " << j;
      }
    }
  }
}

}  // namespace attnkit::test
