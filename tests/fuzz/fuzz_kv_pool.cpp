// kv_pool driven through every lifecycle call (add, append with hostile views,
// compact, fork, truncate, reset, remove) and pool_attention over a random
// subset of its sequences: a rejected call changes nothing, the pages the
// tables reference are exactly the pages in use, and each sequence's output
// matches the reference over each KV head's rows copied out.
#include "attnkit/cached_attention.hpp"
#include "fuzz_support.hpp"

using namespace attnkit;
using namespace attnkit::fuzz;

namespace {

using sequence_id = kv_pool<float>::sequence_id;

/// Free pages and every live sequence's lengths, positions and rows.
std::vector<float> snapshot(const kv_pool<float>& pool) {
  const kv_pool_options& o = pool.options();
  std::vector<float> all = {static_cast<float>(pool.free_pages())};
  for (sequence_id s = 0; s < o.max_sequences; ++s)
    for (std::int64_t l = 0; l < o.layers && pool.contains(s); ++l)
      for (std::int64_t h = 0; h < o.hkv; ++h) {
        const token_index& ix = pool.index(s, l);
        all.push_back(static_cast<float>(s * 1000 + ix.length(h)));
        for (std::int64_t j = 0; j < ix.length(h); ++j) {
          all.push_back(static_cast<float>(ix.position(h, j)));
          all.insert(all.end(), pool.key_row(s, l, h, j), pool.key_row(s, l, h, j) + o.d);
          all.insert(all.end(), pool.value_row(s, l, h, j), pool.value_row(s, l, h, j) + o.dv);
        }
      }
  return all;
}

void check_pages(const kv_pool<float>& pool, const std::vector<sequence_id>& live) {
  std::vector<char> used(static_cast<std::size_t>(pool.options().num_pages), 0);
  kv_batch b;
  for (std::int64_t l = 0; l < pool.options().layers; ++l) {
    pool.gather(l, live, b);
    for (const std::int32_t p : b.indices) used[p] = 1;
  }
  if (std::count(used.begin(), used.end(), 1) != pool.pages_in_use()) fail("a page leaked or is held twice");
}

/// pool_attention over `ids` at `layer` against the reference per (sequence, KV head).
void check_attention(FuzzedDataProvider& in, const kv_pool<float>& pool, const std::vector<sequence_id>& ids,
                     std::int64_t layer) {
  const kv_pool_options& opt = pool.options();
  const std::int64_t hkv = opt.hkv, d = opt.d, dv = opt.dv, group = 1 + small(in, 2),
                     n = static_cast<std::int64_t>(ids.size());
  std::vector<std::int64_t> cu = {0};
  for (std::int64_t s = 0; s < n; ++s) cu.push_back(cu.back() + small(in, 5));
  fuzz_view<4> q(in, {1, hkv * group, cu.back(), d}, true, false, false);
  fuzz_view<4> o(in, {1, hkv * group, cu.back(), dv}, false, false, false);
  kv_batch batch;
  pool.gather(layer, ids, batch);
  attention_params params;
  params.causal = in.ConsumeBool();
  if (!accepted([&] {
        pool_attention(q.in(), pool, batch, tensor_view<const std::int64_t, 1>(cu.data(), {n + 1}), o.view, params,
                       {}, {}, cpu_native{pick_executor(in)});
      }))
    fail("pool_attention rejected a valid call");
  for (std::int64_t s = 0; s < n; ++s)
    for (std::int64_t h = 0; h < hkv; ++h) {
      const std::int64_t len = pool.index(ids[s], layer).length(h), rows = cu[s + 1] - cu[s];
      std::vector<float> kc(static_cast<std::size_t>(len * d)), vc(static_cast<std::size_t>(len * dv));
      for (std::int64_t j = 0; j < len; ++j) {
        std::copy_n(pool.key_row(ids[s], layer, h, j), d, kc.data() + j * d);
        std::copy_n(pool.value_row(ids[s], layer, h, j), dv, vc.data() + j * dv);
      }
      tensor<float, 4> ref({1, group, rows, dv});
      const auto qs = q.in().slice(1, h * group, (h + 1) * group).slice(2, cu[s], cu[s + 1]);
      flash_attention(qs, tensor_view<const float, 4>(kc.data(), {1, 1, len, d}),
                      tensor_view<const float, 4>(vc.data(), {1, 1, len, dv}), ref.view(), params, {}, reference{});
      expect_close(o.view.slice(1, h * group, (h + 1) * group).slice(2, cu[s], cu[s + 1]), ref.view(),
                   "pool_attention o");
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  begin_input();
  kv_pool_options opt;
  opt.layers = 1 + small(in, 1);
  opt.hkv = 1 + small(in, 2);
  opt.d = 1 + small(in, 8);
  opt.dv = small(in, 8);
  opt.page_size = std::int64_t{1} << in.ConsumeIntegralInRange<int>(0, 3);
  opt.num_pages = 1 + small(in, 30);
  opt.max_sequences = 1 + small(in, 3);
  opt.positions = in.ConsumeBool() ? position_mode::original : position_mode::in_cache;
  if (in.ConsumeIntegralInRange<int>(0, 20) == 0) {
    std::int64_t* fields[] = {&opt.layers, &opt.hkv, &opt.d, &opt.dv, &opt.page_size, &opt.num_pages, &opt.max_sequences};
    *fields[in.ConsumeIntegralInRange<std::size_t>(0, 6)] = hostile_extent(in);
  }
  std::optional<kv_pool<float>> pool;
  if (!accepted([&] { pool.emplace(opt); })) return 0;
  const kv_pool_options& o = pool->options();
  for (int step = 0; step < 24 && in.remaining_bytes() > 0; ++step) {
    const sequence_id s = small(in, o.max_sequences), other = small(in, o.max_sequences);  // may be absent
    const std::int64_t layer = small(in, o.layers);  // may be out of range
    const std::vector<float> before = snapshot(*pool);
    bool ok = true;
    switch (in.ConsumeIntegralInRange<int>(0, 7)) {
      case 0: ok = accepted([&] { pool->add_sequence(); }); break;
      case 1:
      case 2: {
        const std::int64_t n = small(in, 9);
        fuzz_view<3> k(in, {o.hkv, n, o.d}, true, false, true), v(in, {o.hkv, n, o.dv}, true, false, true);
        ok = accepted([&] { pool->append(s, layer, k.in(), v.in()); });
        break;
      }
      case 3: {
        keep_set keep;
        for (std::int64_t h = 0; h < o.hkv && pool->contains(s) && layer < o.layers; ++h) {
          keep.heads.emplace_back();
          for (std::int64_t j = 0; j < pool->index(s, layer).length(h); ++j)
            if (in.ConsumeBool()) keep.heads.back().push_back(j);
        }
        ok = accepted([&] { pool->compact(s, layer, keep); });
        break;
      }
      case 4: ok = accepted([&] { pool->truncate(s, small(in, 40) - 1); }); break;
      case 5: ok = accepted([&] { pool->fork(s, other); }); break;
      case 6: ok = accepted([&] { pool->reset(s); }); break;
      default: ok = accepted([&] { pool->remove_sequence(s); }); break;
    }
    if (!ok && snapshot(*pool) != before) fail("a rejected call changed the pool");
    std::vector<sequence_id> live, some;
    for (sequence_id x = 0; x < o.max_sequences; ++x)
      if (pool->contains(x)) {
        live.push_back(x);
        if (in.ConsumeBool()) some.push_back(x);
      }
    check_pages(*pool, live);
    if (in.ConsumeBool()) check_attention(in, *pool, some, small(in, o.layers - 1));
  }
  return 0;
}
