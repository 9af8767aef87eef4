// Built with ATTNKIT_HAS_XSIMD=0: the whole public surface compiles without
// xsimd, and the untagged entry points run the reference backend.
// (Its own executable: the macro removes the SIMD backend from every header.)
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "attnkit/attnkit.hpp"

static_assert(ATTNKIT_HAS_XSIMD == 0, "this test checks a build without xsimd");

namespace attnkit {
namespace {

tensor<float, 4> normal(std::int64_t h, std::int64_t t, std::int64_t d, std::mt19937_64& rng) {
  tensor<float, 4> x({1, h, t, d});
  std::normal_distribution<float> n(0.0f, 1.0f);
  for (std::int64_t i = 0; i < x.size(); ++i) x.data()[i] = n(rng);
  return x;
}

TEST(NoXsimd, UntaggedCallsRunTheReference) {
  std::mt19937_64 rng(std::random_device{}());
  const tensor<float, 4> q = normal(2, 37, 16, rng), k = normal(2, 37, 16, rng), v = normal(2, 37, 12, rng);
  tensor<float, 4> untagged({1, 2, 37, 12}), tagged({1, 2, 37, 12});
  linear_attention(q.cview(), k.cview(), v.cview(), untagged.view());
  linear_attention(q.cview(), k.cview(), v.cview(), tagged.view(), {}, {}, {}, reference{});
  EXPECT_TRUE(std::equal(untagged.data(), untagged.data() + untagged.size(), tagged.data()));

  attention_params p;
  p.causal = true;
  const tensor<float, 4> vf = normal(2, 37, 16, rng);
  tensor<float, 4> o1({1, 2, 37, 16}), o2({1, 2, 37, 16});
  flash_attention(q.cview(), k.cview(), vf.cview(), o1.view(), p);
  flash_attention(q.cview(), k.cview(), vf.cview(), o2.view(), p, {}, {}, reference{});
  EXPECT_TRUE(std::equal(o1.data(), o1.data() + o1.size(), o2.data()));
  EXPECT_NE(o1(0, 1, 36, 5), 0.0f);
}

// The reference backend takes every input form the cpu backend takes: a paged
// cache through cached_attention gives the contiguous call's bits.
TEST(NoXsimd, CachedAttentionOverPagesRunsOnTheReference) {
  std::mt19937_64 rng(std::random_device{}());
  const std::int64_t hkv = 2, d = 16, rows = 45;
  kv_cache_options opt;
  opt.hkv = hkv, opt.d = opt.dv = d, opt.page_size = 8, opt.num_pages = 16;
  kv_cache<float> cache(opt);
  const tensor<float, 4> k = normal(hkv, rows, d, rng), v = normal(hkv, rows, d, rng), q = normal(4, 3, d, rng);
  cache.append(tensor_view<const float, 3>(k.data(), {hkv, rows, d}), tensor_view<const float, 3>(v.data(), {hkv, rows, d}));
  attention_params p;
  p.causal = true;
  tensor<float, 4> paged({1, 4, 3, d}), contiguous({1, 4, 3, d});
  cached_attention(q.cview(), cache, paged.view(), p);
  flash_attention(q.cview(), k.cview(), v.cview(), contiguous.view(), p, {}, {}, reference{});
  EXPECT_TRUE(std::equal(paged.data(), paged.data() + paged.size(), contiguous.data()));
  EXPECT_NE(paged(0, 3, 2, 5), 0.0f);
}

}  // namespace
}  // namespace attnkit
