// kv_pool: batched attention over many sequences (bit-equal to each sequence
// alone, and equal to the fp64 oracle per head), fork with copy on write,
// truncate, reset and remove, the engine's memory, and bad calls that fail
// before anything changes.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <stdexcept>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/cached_attention.hpp"
#include "attnkit/kv/pool.hpp"
#include "support/cached_case.hpp"
#include "support/expect_error.hpp"
#include "support/paged_copy.hpp"
#include "support/random.hpp"
#include "support/reference_attention.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

using sequence_id = kv_pool<half>::sequence_id;

/// 2 layers of 2 KV heads.
kv_pool_options small_pool(std::int64_t num_pages, std::int64_t max_sequences, std::int64_t d = 32,
                           std::int64_t dv = 24, std::int64_t page_size = 16) {
  kv_pool_options o;
  o.layers = 2;
  o.hkv = 2;
  o.d = d;
  o.dv = dv;
  o.page_size = page_size;
  o.num_pages = num_pages;
  o.max_sequences = max_sequences;
  return o;
}

/// Everything a pool shows of a sequence at a layer: lengths, positions and rows.
template <class T>
std::vector<float> contents(const kv_pool<T>& pool, sequence_id s, std::int64_t layer) {
  const kv_pool_options& o = pool.options();
  std::vector<float> all = {static_cast<float>(pool.index(s, layer).seen())};
  for (std::int64_t h = 0; h < o.hkv; ++h) {
    all.push_back(static_cast<float>(pool.index(s, layer).length(h)));
    for (std::int64_t j = 0; j < pool.index(s, layer).length(h); ++j) {
      all.push_back(static_cast<float>(pool.index(s, layer).position(h, j)));
      for (std::int64_t x = 0; x < o.d; ++x) all.push_back(to_float(pool.key_row(s, layer, h, j)[x]));
      for (std::int64_t x = 0; x < o.dv; ++x) all.push_back(to_float(pool.value_row(s, layer, h, j)[x]));
    }
  }
  return all;
}

/// The pool as a caller sees it: free pages and every live sequence's contents.
template <class T>
std::vector<float> snapshot(const kv_pool<T>& pool) {
  std::vector<float> all = {static_cast<float>(pool.free_pages())};
  for (sequence_id s = 0; s < pool.options().max_sequences; ++s) {
    all.push_back(pool.contains(s));
    for (std::int64_t l = 0; l < pool.options().layers && pool.contains(s); ++l) {
      const std::vector<float> c = contents(pool, s, l);
      all.insert(all.end(), c.begin(), c.end());
    }
  }
  return all;
}

void append_random(kv_pool<half>& pool, sequence_id s, std::int64_t layer, std::int64_t n, std::mt19937_64& rng) {
  const kv_pool_options& o = pool.options();
  const auto k = random_rows(o.hkv, n, o.d, rng), v = random_rows(o.hkv, n, o.dv, rng);
  pool.append(s, layer, k.cview(), v.cview());
}

template <class Backend>
void check_batch(const Backend& backend) {
  seeded_rng seeded;
  std::uniform_int_distribution<std::int64_t> some(2, 90);
  std::uniform_real_distribution<float> weight(0.0f, 2.0f);
  kv_pool<half> pool(small_pool(400, 8));
  const kv_pool_options& o = pool.options();
  const std::int64_t layer = 1, hq = 4, group = hq / o.hkv;
  // Decode rows and prefill chunks; a sequence of 0 keys; heads compacted to different rows.
  const std::vector<std::int64_t> lengths = {1, 37, 300, 0, some(seeded.rng) + 100, 64};
  const std::vector<std::int64_t> rows = {1, 1, 5, 0, some(seeded.rng), 1};
  std::vector<sequence_id> ids;
  for (std::int64_t len : lengths) {
    ids.push_back(pool.add_sequence());
    append_random(pool, ids.back(), 0, 3, seeded.rng);  // another layer, interleaved in the same pool
    append_random(pool, ids.back(), layer, len / 3, seeded.rng);
    append_random(pool, ids.back(), layer, len - len / 3, seeded.rng);
    if (len > 50) {
      keep_set keep;
      for (std::int64_t h = 0; h < o.hkv; ++h) keep.heads.push_back(random_subset(len, 0.3 + 0.4 * h, seeded.rng));
      pool.compact(ids.back(), layer, keep);
    }
  }
  const std::int64_t n = static_cast<std::int64_t>(ids.size());
  std::vector<std::int64_t> cu = {0};
  for (std::int64_t r : rows) cu.push_back(cu.back() + r);
  const std::int64_t total = cu.back(), capacity = 310;
  tensor<float, 4> q({1, hq, total, o.d}), out({1, hq, total, o.dv}, NAN);
  fill_normal(q.data(), q.size(), seeded.rng);
  std::vector<float> row_weights(static_cast<std::size_t>(total));
  for (float& w : row_weights) w = weight(seeded.rng);
  tensor<float, 3> lse({1, hq, total}, NAN), weights({o.hkv, n, capacity}, NAN);
  attention_params params;
  params.causal = true;
  kv_batch batch;
  pool.gather(layer, ids, batch);
  const tensor_view<const float, 1> rw(row_weights.data(), {total});
  // The call writes keys [0, longest head of the batch); the capacity past it is left alone.
  const auto longest_of = [&](const std::vector<sequence_id>& some) {
    std::int64_t most = 0;
    for (const sequence_id id : some)
      for (std::int64_t h = 0; h < o.hkv; ++h) most = std::max(most, pool.index(id, layer).length(h));
    return most;
  };
  const std::int64_t longest = longest_of(ids);
  pool_attention(q.cview(), pool, batch, tensor_view<const std::int64_t, 1>(cu.data(), {n + 1}), out.view(), params,
                 lse.view(), key_weights{weights.view(), rw}, backend);

  for (std::int64_t s = 0; s < n; ++s) {
    SCOPED_TRACE(::testing::Message() << "sequence " << s << " rows " << rows[s] << " keys " << lengths[s]);
    // Alone: the same bits.
    kv_batch one;
    pool.gather(layer, {ids[s]}, one);
    const std::vector<std::int64_t> cu1 = {0, rows[s]};
    tensor<float, 4> q1({1, hq, rows[s], o.d}), o1({1, hq, rows[s], o.dv});
    tensor<float, 3> w1({o.hkv, 1, capacity});
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t i = 0; i < rows[s]; ++i) std::copy_n(&q(0, h, cu[s] + i, 0), o.d, &q1(0, h, i, 0));
    pool_attention(q1.cview(), pool, one, tensor_view<const std::int64_t, 1>(cu1.data(), {2}), o1.view(), params, {},
                   key_weights{w1.view(), tensor_view<const float, 1>(row_weights.data() + cu[s], {rows[s]})},
                   backend);
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t i = 0; i < rows[s]; ++i)
        ASSERT_EQ(std::memcmp(&o1(0, h, i, 0), &out(0, h, cu[s] + i, 0), sizeof(float) * o.dv), 0) << h << " " << i;
    const auto ws = sequence_key_weights(weights.cview(), s);
    for (std::int64_t h = 0; h < o.hkv; ++h)
      for (std::int64_t j = 0; j < longest_of({ids[s]}); ++j) ASSERT_EQ(w1(h, 0, j), ws(h, j)) << h << " " << j;

    // Against the oracle, head by head over the rows it kept.
    for (std::int64_t h = 0; h < o.hkv; ++h) {
      const std::int64_t len = pool.index(ids[s], layer).length(h);
      tensor<float, 4> kh({1, 1, len, o.d}), vh({1, 1, len, o.dv});
      for (std::int64_t j = 0; j < len; ++j) {
        for (std::int64_t x = 0; x < o.d; ++x) kh(0, 0, j, x) = to_float(pool.key_row(ids[s], layer, h, j)[x]);
        for (std::int64_t x = 0; x < o.dv; ++x) vh(0, 0, j, x) = to_float(pool.value_row(ids[s], layer, h, j)[x]);
      }
      const auto qg = q.cview().slice(1, h * group, (h + 1) * group).slice(2, cu[s], cu[s] + rows[s]);
      const reference_result ref = reference_attention(qg, kh.cview(), vh.cview(), params);
      for (std::int64_t g = 0; g < group; ++g)
        for (std::int64_t i = 0; i < rows[s]; ++i) {
          for (std::int64_t x = 0; x < o.dv; ++x)
            ASSERT_NEAR(out(0, h * group + g, cu[s] + i, x), ref.out(0, g, i, x), 1e-5) << "head " << h;
          const double want_lse = ref.row_lse(0, g, i);  // -inf for a row that sees no key
          if (std::isinf(want_lse))
            ASSERT_EQ(lse(0, h * group + g, cu[s] + i), -INFINITY);
          else
            ASSERT_NEAR(lse(0, h * group + g, cu[s] + i), want_lse, 1e-5);
        }
      for (std::int64_t j = 0; j < capacity; ++j) {
        double want = 0;
        for (std::int64_t g = 0; g < group && j < len; ++g)
          for (std::int64_t i = 0; i < rows[s]; ++i) want += row_weights[cu[s] + i] * ref.prob(0, g, i, j);
        if (j >= longest)
          ASSERT_TRUE(std::isnan(ws(h, j))) << "key " << j << " is past every head and was written";
        else
          ASSERT_NEAR(ws(h, j), want, 1e-5 * std::max(1.0, want)) << "head " << h << " key " << j;
      }
    }
  }
}

TEST(KvPool, ABatchEqualsEachSequenceAloneAndTheOracle) {
  check_batch(cpu_native{two_threads()});
  check_batch(reference{});
}

TEST(KvPool, ForkSharesPagesAndCopiesOnWrite) {
  seeded_rng seeded;
  kv_pool<half> pool(small_pool(200, 4));
  const sequence_id a = pool.add_sequence(), b = pool.add_sequence();
  for (std::int64_t l = 0; l < 2; ++l) append_random(pool, a, l, 40, seeded.rng);  // 3 pages per head, the last partial
  const std::int64_t used = pool.pages_in_use();
  EXPECT_EQ(used, 2 * 2 * 3);
  const std::vector<float> before = contents(pool, a, 1);
  pool.fork(a, b);
  EXPECT_EQ(pool.pages_in_use(), used);  // shared, not copied
  EXPECT_EQ(contents(pool, b, 1), before);

  // b writes into the shared partial page: that page alone is copied, and a does not change.
  append_random(pool, b, 1, 5, seeded.rng);
  EXPECT_EQ(pool.pages_in_use(), used + 2);
  EXPECT_EQ(contents(pool, a, 1), before);
  // a compacts layer 1: the pages it writes into are copied, b keeps the rows it shared.
  const std::vector<float> b_rows = contents(pool, b, 1);
  keep_set keep;
  for (std::int64_t h = 0; h < 2; ++h) keep.heads.push_back(random_subset(40, 0.5, seeded.rng));
  pool.compact(a, 1, keep);
  EXPECT_EQ(contents(pool, b, 1), b_rows);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::size_t r = 0; r < keep.heads[h].size(); ++r)
      for (std::int64_t x = 0; x < 32; ++x)
        ASSERT_EQ(to_float(pool.key_row(a, 1, h, static_cast<std::int64_t>(r))[x]),
                  to_float(pool.key_row(b, 1, h, keep.heads[h][r])[x]));

  // Removing both gives every page back.
  pool.remove_sequence(a);
  pool.remove_sequence(b);
  EXPECT_EQ(pool.free_pages(), 200);
}

TEST(KvPool, TruncateRollsBackToTheFirstTokens) {
  seeded_rng seeded;
  for (position_mode mode : {position_mode::original, position_mode::in_cache}) {
    kv_pool_options opt = small_pool(100, 3);
    opt.positions = mode;
    kv_pool<half> pool(opt);
    const sequence_id s = pool.add_sequence(), twin = pool.add_sequence();
    std::mt19937_64 same(seeded.seed);
    // s: 30 tokens, then a speculative 9 more, rolled back; twin: the same 30 tokens only.
    for (std::int64_t l = 0; l < 2; ++l) append_random(pool, s, l, 30, same);
    std::mt19937_64 again(seeded.seed);
    for (std::int64_t l = 0; l < 2; ++l) append_random(pool, twin, l, 30, again);
    const std::int64_t pages = pool.pages_in_use();
    for (std::int64_t l = 0; l < 2; ++l) append_random(pool, s, l, 9, seeded.rng);
    pool.truncate(s, 30);
    EXPECT_EQ(pool.pages_in_use(), pages);
    for (std::int64_t l = 0; l < 2; ++l) EXPECT_EQ(contents(pool, s, l), contents(pool, twin, l));
    // After a compaction, rows appended later roll back too.
    keep_set keep{{{0, 3, 7, 29}, {1, 2}}};
    pool.compact(s, 0, keep);
    for (std::int64_t l = 0; l < 2; ++l) append_random(pool, s, l, 6, seeded.rng);
    pool.truncate(s, 32);
    EXPECT_EQ(pool.index(s, 0).length(0), 6);
    EXPECT_EQ(pool.index(s, 0).length(1), 4);
    EXPECT_EQ(pool.index(s, 1).length(0), 32);
    pool.reset(s);
    EXPECT_EQ(pool.index(s, 1).length(0), 0);
    EXPECT_EQ(pool.pages_in_use(), pages / 2);
  }
}

/// What a pool should hold, kept by plain vectors: per live sequence, layer and head, its rows.
struct pool_model {
  struct row {
    std::int64_t position;
    std::vector<float> k, v;
  };
  struct layer {
    std::vector<std::vector<row>> heads;
    std::int64_t seen = 0, settled = 0;
  };
  std::map<sequence_id, std::vector<layer>> sequences;

  /// Every row of sequence s at layer l as contents() lists them.
  std::vector<float> contents(sequence_id s, std::int64_t l) const {
    const layer& ly = sequences.at(s)[l];
    std::vector<float> all = {static_cast<float>(ly.seen)};
    for (const auto& head : ly.heads) {
      all.push_back(static_cast<float>(head.size()));
      for (const row& r : head) {
        all.push_back(static_cast<float>(r.position));
        all.insert(all.end(), r.k.begin(), r.k.end());
        all.insert(all.end(), r.v.begin(), r.v.end());
      }
    }
    return all;
  }
};

/// The distinct pages the pool's tables reference, over every live sequence and layer.
std::int64_t referenced_pages(const kv_pool<float>& pool, const std::vector<sequence_id>& live) {
  std::vector<char> seen(static_cast<std::size_t>(pool.options().num_pages), 0);
  kv_batch b;
  for (std::int64_t l = 0; l < pool.options().layers; ++l) {
    pool.gather(l, live, b);
    for (std::int32_t p : b.indices) seen[p] = 1;
  }
  return std::count(seen.begin(), seen.end(), 1);
}

TEST(KvPool, RandomLifecyclesMatchAPlainModel) {
  seeded_rng seeded;
  std::mt19937_64& rng = seeded.rng;
  for (position_mode mode : {position_mode::original, position_mode::in_cache}) {
    kv_pool_options opt = small_pool(48, 4, 3, 2, 4);
    opt.positions = mode;
    kv_pool<float> pool(opt);
    pool_model model;
    std::uniform_int_distribution<int> pick_op(0, 7);
    std::uniform_int_distribution<std::int64_t> tokens(0, 9), any_id(0, 4), any_layer(0, 1);
    for (int step = 0; step < 4000; ++step) {
      const int op = pick_op(rng);
      const sequence_id s = any_id(rng), other = any_id(rng);  // id 4 is never in the pool
      const std::int64_t layer = any_layer(rng), n = tokens(rng);
      const bool live = model.sequences.count(s) > 0;
      const std::vector<float> before = snapshot(pool);
      bool valid = live || op == 0;  // what the model says the pool must accept (bar running out of pages)
      try {
        if (op == 0) {
          valid = model.sequences.size() < 4;
          const sequence_id id = pool.add_sequence();
          model.sequences[id] = std::vector<pool_model::layer>(2, pool_model::layer{{{}, {}}, 0, 0});
        } else if (op <= 2) {  // append
          const auto k = random_rows(2, n, 3, rng), v = random_rows(2, n, 2, rng);
          pool.append(s, layer, k.cview(), v.cview());
          pool_model::layer& ly = model.sequences.at(s)[layer];
          for (std::int64_t h = 0; h < 2; ++h)
            for (std::int64_t i = 0; i < n; ++i)
              ly.heads[h].push_back({mode == position_mode::original ? ly.seen + i
                                                                      : static_cast<std::int64_t>(ly.heads[h].size()),
                                     {&k(h, i, 0), &k(h, i, 0) + 3}, {&v(h, i, 0), &v(h, i, 0) + 2}});
          ly.seen += n;
        } else if (op == 3) {  // compact to a random subset per head
          if (!live) continue;
          pool_model::layer& ly = model.sequences.at(s)[layer];
          keep_set keep;
          for (const auto& head : ly.heads)
            keep.heads.push_back(random_subset(static_cast<std::int64_t>(head.size()), 0.6, rng));
          pool.compact(s, layer, keep);
          for (std::size_t h = 0; h < 2; ++h) {
            std::vector<pool_model::row> kept;
            for (std::int64_t j : keep.heads[h]) kept.push_back(ly.heads[h][j]);
            for (std::size_t r = 0; r < kept.size() && mode == position_mode::in_cache; ++r)
              kept[r].position = static_cast<std::int64_t>(r);
            ly.heads[h] = kept;
          }
          ly.settled = ly.seen;
        } else if (op == 4) {  // truncate to a random count, valid or not
          if (!live) pool.truncate(s, 0);
          std::vector<pool_model::layer>& ls = model.sequences.at(s);
          const std::int64_t keep_tokens = std::uniform_int_distribution<std::int64_t>(-1, ls[0].seen + 1)(rng);
          for (const pool_model::layer& ly : ls)
            valid &= keep_tokens <= ly.seen && keep_tokens >= (mode == position_mode::original ? 0 : ly.settled);
          pool.truncate(s, keep_tokens);
          for (pool_model::layer& ly : ls) {
            for (auto& head : ly.heads) {
              std::size_t r = head.size();  // rows of the dropped tokens are the tail
              const std::int64_t drop = ly.seen - keep_tokens;
              if (mode == position_mode::original)
                while (r > 0 && head[r - 1].position >= keep_tokens) --r;
              else
                r -= static_cast<std::size_t>(drop);
              head.resize(r);
            }
            ly.seen = keep_tokens;
          }
        } else if (op == 5) {
          valid &= model.sequences.count(other) > 0 && s != other;
          pool.fork(s, other);
          model.sequences.at(other) = model.sequences.at(s);
        } else if (op == 6) {
          pool.reset(s);
          model.sequences.at(s) = std::vector<pool_model::layer>(2, pool_model::layer{{{}, {}}, 0, 0});
        } else {
          pool.remove_sequence(s);
          model.sequences.erase(s);
        }
      } catch (const error& e) {
        ASSERT_EQ(snapshot(pool), before) << "a failed call changed the pool: " << e.what();
        ASSERT_TRUE(!valid || std::string(e.what()).find(" free") != std::string::npos) << e.what();
        continue;
      } catch (const std::out_of_range&) {
        FAIL() << "the pool accepted a call on sequence " << s << " or " << other << ", which it does not hold";
      }
      ASSERT_TRUE(valid) << "step " << step << ": the pool accepted call " << op << ", which the model rejects";
      std::vector<sequence_id> ids;
      for (const auto& [id, layers] : model.sequences) {
        ids.push_back(id);
        for (std::int64_t l = 0; l < 2; ++l) ASSERT_EQ(contents(pool, id, l), model.contents(id, l)) << step;
      }
      ASSERT_EQ(referenced_pages(pool, ids), pool.pages_in_use()) << "step " << step << ": a page leaked";
    }
    for (const auto& [id, layers] : model.sequences) pool.remove_sequence(id);
    EXPECT_EQ(pool.free_pages(), opt.num_pages);
  }
}

TEST(KvPool, RunsOnTheEnginesMemory) {
  seeded_rng seeded;
  const kv_pool_options opt = small_pool(10, 1);
  std::vector<half> memory(kv_pool<half>::memory_bytes(opt) / sizeof(half));
  expect_error([&] { kv_pool<half> p(opt, memory.data(), 8); },
               "attnkit: kv_pool: the memory given holds 8 bytes, the pool needs " +
                   std::to_string(kv_pool<half>::memory_bytes(opt)));
  kv_pool<half> pool(opt, memory.data(), memory.size() * sizeof(half));
  const sequence_id s = pool.add_sequence();
  append_random(pool, s, 0, 3, seeded.rng);
  const half* row = pool.key_row(s, 0, 1, 2);
  EXPECT_TRUE(row >= memory.data() && row < memory.data() + memory.size());
}

TEST(KvPool, BadCallsFailBeforeAnyChange) {
  seeded_rng seeded;
  kv_pool<half> pool(small_pool(8, 2));
  const sequence_id a = pool.add_sequence(), b = pool.add_sequence();
  append_random(pool, a, 0, 20, seeded.rng);  // 2 pages per head
  pool.fork(a, b);
  append_random(pool, b, 1, 1, seeded.rng);
  const std::vector<float> before = snapshot(pool);
  const auto expect = [&](auto call, const std::string& message) {
    expect_error(call, "attnkit: " + message);
    EXPECT_EQ(snapshot(pool), before) << message;
  };
  expect([&] { append_random(pool, 5, 0, 1, seeded.rng); }, "kv_pool::append: sequence 5 is not in the pool");
  expect([&] { append_random(pool, a, 2, 1, seeded.rng); }, "kv_pool::append: layer 2 is outside [0, 2)");
  // b's first write into the shared pages needs a copy per head, and the pool has 2 free pages after b's layer 1.
  expect([&] { append_random(pool, b, 0, 20, seeded.rng); },
         "kv_pool::append: sequence 1 layer 0 needs 4 pages for 20 more rows per head and the pool has 2 free "
         "(evict, remove a sequence, or give the pool more pages)");
  expect([&] { pool.add_sequence(); },
         "kv_pool::add_sequence: all max_sequences = 2 sequences are in use (remove one, or raise max_sequences)");
  expect([&] { pool.fork(a, a); }, "kv_pool::fork: cannot fork sequence 0 into itself");
  expect([&] { pool.fork(a, 7); }, "kv_pool::fork: sequence 7 is not in the pool");
  expect([&] { pool.truncate(a, 21); },
         "kv_pool::truncate: sequence 0 layer 0 holds tokens [0, 20] a truncation can keep, asked to keep 21");
  expect([&] { pool.truncate(a, -1); },
         "kv_pool::truncate: sequence 0 layer 0 holds tokens [0, 20] a truncation can keep, asked to keep -1");
  expect([&] { pool.compact(a, 0, keep_set{{{0, 1}}}); }, "kv_pool::compact: keep_set has 1 heads, the cache 2");
  expect([&] { pool.remove_sequence(9); }, "kv_pool::reset: sequence 9 is not in the pool");
}

}  // namespace
}  // namespace attnkit::test
