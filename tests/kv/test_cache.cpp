// kv_cache (contiguous and paged): append and read back, overflow errors that
// change nothing, compaction in order with pages freed, position modes, RoPE
// re-rotation on compaction, and cached_attention over heads of different
// lengths against the fp64 oracle.
#include <cmath>
#include <complex>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/cached_attention.hpp"
#include "attnkit/kv/cache.hpp"
#include "attnkit/kv/rope.hpp"
#include "support/cached_case.hpp"
#include "support/expect_error.hpp"
#include "support/paged_copy.hpp"
#include "support/random.hpp"
#include "support/reference_attention.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

class KvCacheLayout : public ::testing::TestWithParam<bool> {};

TEST_P(KvCacheLayout, AppendReadBackAndCompact) {
  const bool paged = GetParam();
  seeded_rng seeded;
  const std::int64_t hkv = 3, d = 20, dv = 23;
  kv_cache<half> cache(layout_options(paged, hkv, d, 100));
  std::vector<tensor<float, 3>> ks, vs;  // what went in, per chunk
  for (std::int64_t n : {5, 1, 37, 0, 20}) {
    ks.push_back(random_rows(hkv, n, d, seeded.rng));
    vs.push_back(random_rows(hkv, n, dv, seeded.rng));
    cache.append(ks.back().cview(), vs.back().cview());
  }
  // (h, j) -> the source row, in append order.
  const auto source = [&](const std::vector<tensor<float, 3>>& chunks, std::int64_t h, std::int64_t j) {
    for (const auto& c : chunks) {
      if (j < c.extent(1)) return &c(h, j, 0);
      j -= c.extent(1);
    }
    return static_cast<float*>(nullptr);
  };
  const auto expect_rows = [&](const std::vector<std::vector<std::int64_t>>& kept) {
    const paged_kv<const half> kview = cache.keys(), vview = cache.values();
    for (std::int64_t h = 0; h < hkv; ++h) {
      ASSERT_EQ(cache.index().length(h), static_cast<std::int64_t>(kept[h].size()));
      ASSERT_EQ(kview.length(h), cache.index().length(h));
      for (std::size_t r = 0; r < kept[h].size(); ++r) {
        ASSERT_EQ(cache.index().position(h, r), kept[h][r]);
        const float* k = source(ks, h, kept[h][r]);
        const float* v = source(vs, h, kept[h][r]);
        for (std::int64_t x = 0; x < d; ++x) ASSERT_EQ(to_float(kview.row(h, 0, r)[x]), to_float(from_float<half>(k[x])));
        for (std::int64_t x = 0; x < dv; ++x) ASSERT_EQ(to_float(vview.row(h, 0, r)[x]), to_float(from_float<half>(v[x])));
      }
    }
  };
  std::vector<std::vector<std::int64_t>> kept(hkv);
  for (auto& k : kept) {
    for (std::int64_t j = 0; j < 63; ++j) k.push_back(j);
  }
  expect_rows(kept);
  EXPECT_EQ(cache.index().seen(), 63);

  // Compact each head to its own random subset: rows stay in order, pages are freed.
  keep_set keep;
  for (std::int64_t h = 0; h < hkv; ++h) keep.heads.push_back(random_subset(63, 0.3 + 0.2 * h, seeded.rng));
  cache.compact(keep);
  for (std::int64_t h = 0; h < hkv; ++h)
    for (auto& j : keep.heads[h]) j = kept[h][j];
  expect_rows(keep.heads);
  std::int64_t pages = 0;
  for (std::int64_t h = 0; h < hkv; ++h) pages += (cache.index().length(h) + 15) / 16;
  if (paged) {
    EXPECT_EQ(cache.pages_in_use(), pages);
  }
  EXPECT_EQ(cache.index().next_position(0), 63);
}

INSTANTIATE_TEST_SUITE_P(Layouts, KvCacheLayout, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "paged" : "contiguous"; });

TEST(KvCache, OverflowIsAnErrorAndChangesNothing) {
  seeded_rng seeded;
  kv_cache<float> cache(layout_options(false, 2, 4, 10));
  const auto eight = random_rows(2, 8, 4, seeded.rng), eight_v = random_rows(2, 8, 7, seeded.rng);
  const auto three = random_rows(2, 3, 4, seeded.rng), three_v = random_rows(2, 3, 7, seeded.rng);
  cache.append(eight.cview(), eight_v.cview());
  expect_error([&] { cache.append(three.cview(), three_v.cview()); },
               "attnkit: kv_cache::append: head 0 holds 8 of 10 rows and cannot take 3 more (evict first, or size "
               "the cache for the budget)");
  EXPECT_EQ(cache.index().length(0), 8);
  EXPECT_EQ(cache.index().seen(), 8);

  kv_cache_options o = layout_options(true, 2, 4, 0);
  o.num_pages = 2;
  o.page_size = 4;
  kv_cache<float> pool(o);
  pool.append(three.cview(), three_v.cview());
  expect_error([&] { pool.append(three.cview(), three_v.cview()); },
               "attnkit: kv_pool::append: sequence 0 layer 0 needs 2 pages for 3 more rows per head and the pool has 0 "
               "free (evict, remove a sequence, or give the pool more pages)");
  EXPECT_EQ(pool.index().length(1), 3);
}

TEST(KvCache, BadInputIsRejected) {
  kv_cache<float> cache(layout_options(false, 2, 4, 10));
  const tensor<float, 3> k({2, 3, 4}, 1.0f), v({2, 3, 7}, 1.0f), wrong({3, 3, 4}, 1.0f);
  cache.append(k.cview(), v.cview());
  expect_error([&] { cache.append(wrong.cview(), v.cview()); },
               "attnkit: kv_pool::append: k and v must have extent(0) = hkv = 2, got 3 and 2");
  expect_error([&] { cache.compact(keep_set{{{0, 1}}}); }, "attnkit: kv_pool::compact: keep_set has 1 heads, the cache 2");
  expect_error([&] { cache.compact(keep_set{{{0, 2}, {1, 1}}}); },
               "attnkit: kv_pool::compact: keep_set head 1 entry 1 = 1 must be a row < length = 3 and above the "
               "entry before it");
  expect_error([&] { cache.compact(keep_set{{{0, 3}, {1}}}); },
               "attnkit: kv_pool::compact: keep_set head 0 entry 1 = 3 must be a row < length = 3 and above the "
               "entry before it");
  EXPECT_EQ(cache.index().length(0), 3);
  kv_cache_options o = layout_options(false, 2, 4, 10);
  o.rerotate = rope{};
  expect_error([&] { kv_cache<float> c(o); },
               "attnkit: kv_pool: rerotate needs positions = in_cache (original positions never move)");
  o.positions = position_mode::in_cache;
  o.rerotate->rotary_dim = 3;
  expect_error([&] { kv_cache<float> c(o); }, "attnkit: kv_pool: rope.rotary_dim must be even and in [0, d = 4], got 3");
}

TEST(Rope, TheTableRotatesABatchAsEachRowAlone) {
  seeded_rng seeded;
  std::uniform_int_distribution<std::int64_t> position(0, 99);
  for (const rope r : {rope{10000.0, rope_layout::half_split, 16}, rope{500.0, rope_layout::interleaved, 0}}) {
    const rope_table table(100, 20, r);
    tensor<half, 4> x({2, 3, 5, 20});
    std::vector<float> source(static_cast<std::size_t>(x.size()));
    fill_normal(source.data(), x.size(), seeded.rng);
    for (std::int64_t e = 0; e < x.size(); ++e) x.data()[e] = from_float<half>(source[e]);
    tensor<std::int64_t, 3> pos({2, 3, 5});
    for (std::int64_t e = 0; e < pos.size(); ++e) pos.data()[e] = position(seeded.rng);
    tensor<half, 4> want({2, 3, 5, 20});
    std::copy_n(x.data(), x.size(), want.data());
    for (std::int64_t b = 0; b < 2; ++b)
      for (std::int64_t h = 0; h < 3; ++h)
        for (std::int64_t i = 0; i < 5; ++i) rope_rotate(&want(b, h, i, 0), 20, static_cast<double>(pos(b, h, i)), r);
    table.apply(x.view(), pos.cview());
    EXPECT_EQ(std::memcmp(x.data(), want.data(), sizeof(half) * x.size()), 0);
    pos(1, 2, 4) = 100;
    expect_error([&] { table.apply(x.view(), pos.cview()); },
                 "attnkit: rope_table::apply: pos(1, 2, 4) = 100 is outside the table's [0, 100)");
  }
}

TEST(Rope, MatchesComplexRotationAndComposes) {
  seeded_rng seeded;
  for (rope_layout layout : {rope_layout::half_split, rope_layout::interleaved}) {
    const rope r{500000.0, layout, 12};  // partial rotary dims: the last 4 stay
    const std::int64_t d = 16;
    std::vector<float> x(d), y;
    fill_normal(x.data(), d, seeded.rng);
    y = x;
    rope_rotate(y.data(), d, 37.0, r);
    for (std::int64_t i = 0; i < 6; ++i) {
      const std::int64_t a = layout == rope_layout::half_split ? i : 2 * i;
      const std::int64_t b = layout == rope_layout::half_split ? i + 6 : 2 * i + 1;
      const std::complex<double> z(x[a], x[b]);
      const std::complex<double> turned = z * std::polar(1.0, 37.0 * std::pow(500000.0, -2.0 * i / 12.0));
      EXPECT_NEAR(y[a], turned.real(), 1e-5);
      EXPECT_NEAR(y[b], turned.imag(), 1e-5);
    }
    for (std::int64_t c = 12; c < d; ++c) EXPECT_EQ(y[c], x[c]);
    std::vector<float> z = x;  // R(a) R(b) = R(a + b)
    rope_rotate(z.data(), d, 1000.0, r);
    rope_rotate(z.data(), d, -963.0, r);
    for (std::int64_t c = 0; c < d; ++c) EXPECT_NEAR(z[c], y[c], 1e-4);
  }
}

TEST(KvCache, InCachePositionsRerotateMovedKeys) {
  seeded_rng seeded;
  for (rope_layout layout : {rope_layout::half_split, rope_layout::interleaved}) {
    const std::int64_t hkv = 2, d = 32, n = 50;
    kv_cache_options o = layout_options(false, hkv, d, n);
    o.dv = d;
    o.positions = position_mode::in_cache;
    o.rerotate = rope{10000.0, layout, 0};
    kv_cache<float> cache(o);
    const auto raw = random_rows(hkv, n, d, seeded.rng);  // keys before RoPE
    tensor<float, 3> rotated({hkv, n, d});
    std::memcpy(rotated.data(), raw.data(), sizeof(float) * raw.size());
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t j = 0; j < n; ++j) rope_rotate(&rotated(h, j, 0), d, static_cast<double>(j), *o.rerotate);
    cache.append(rotated.cview(), raw.cview());
    keep_set keep;
    for (std::int64_t h = 0; h < hkv; ++h) keep.heads.push_back(random_subset(n, 0.4, seeded.rng));
    cache.compact(keep);
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t r = 0; r < cache.index().length(h); ++r) {
        ASSERT_EQ(cache.index().position(h, r), r);
        std::vector<float> want(&raw(h, keep.heads[h][r], 0), &raw(h, keep.heads[h][r], 0) + d);
        rope_rotate(want.data(), d, static_cast<double>(r), *o.rerotate);  // the key as if cached at its new slot
        for (std::int64_t x = 0; x < d; ++x) ASSERT_NEAR(cache.key_row(h, r)[x], want[x], 2e-5) << h << " " << r;
      }
    EXPECT_EQ(cache.index().next_position(1), cache.index().length(1));
  }
}

class CachedAttention : public ::testing::TestWithParam<bool> {};

TEST_P(CachedAttention, HeadsOfDifferentLengthsMatchTheOraclePerHead) {
  check_cached_attention(GetParam(), cpu_native{two_threads()});
}

INSTANTIATE_TEST_SUITE_P(Layouts, CachedAttention, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "paged" : "contiguous"; });

TEST(CachedAttention, UntouchedCacheEqualsFlashBitForBit) {
  seeded_rng seeded;
  const std::int64_t hkv = 8, hq = 32, d = 128, n = 1000;
  kv_cache<half> cache(layout_options(false, hkv, d, n));
  const auto k = random_rows(hkv, n, d, seeded.rng), v = random_rows(hkv, n, d + 3, seeded.rng);
  cache.append(k.cview(), v.cview());
  tensor<half, 4> kc({1, hkv, n, d}), vc({1, hkv, n, d + 3});
  for (std::int64_t i = 0; i < kc.size(); ++i) kc.data()[i] = from_float<half>(k.data()[i]);
  for (std::int64_t i = 0; i < vc.size(); ++i) vc.data()[i] = from_float<half>(v.data()[i]);
  tensor<float, 4> q({1, hq, 1, d}), via_cache({1, hq, 1, d + 3}), direct({1, hq, 1, d + 3});
  fill_normal(q.data(), q.size(), seeded.rng);
  const cpu<xsimd::default_arch> backend{two_threads()};
  cached_attention(q.cview(), cache, via_cache.view(), {}, {}, {}, backend);
  flash_attention(q.cview(), kc.cview(), vc.cview(), direct.view(), {}, {}, backend);
  EXPECT_EQ(std::memcmp(via_cache.data(), direct.data(), sizeof(float) * direct.size()), 0);
}

}  // namespace
}  // namespace attnkit::test
