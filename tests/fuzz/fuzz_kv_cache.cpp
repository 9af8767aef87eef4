// kv_cache (contiguous and paged, hostile options) driven through appends,
// cached_attention with key weights, a policy's observe and evict: cached
// attention against the reference over each KV head's rows copied out, and
// every eviction keeping its protected rows, in order, within the pool.
#include <variant>

#include "fuzz_support.hpp"

using namespace attnkit;
using namespace attnkit::fuzz;

namespace {

using any_policy = std::variant<streaming_llm, h2o, a2sf, tova, snapkv, duo_attention>;

std::int64_t option(FuzzedDataProvider& in, std::int64_t most) {
  return in.ConsumeIntegralInRange<int>(0, 25) == 0 ? hostile_extent(in) : small(in, most);
}

any_policy make_policy(FuzzedDataProvider& in, std::int64_t hkv) {
  budget_options b;
  b.sinks = option(in, 4);
  b.recent = option(in, 8);
  b.budget = option(in, 30);
  b.slack = option(in, 4);
  if (in.ConsumeBool()) b.pinned = {small(in, 30)};
  switch (in.ConsumeIntegralInRange<int>(0, 5)) {
    case 0: return streaming_llm(streaming_options{b.sinks, b.recent, b.slack, b.pinned});
    case 1: return h2o(b);
    case 2: return a2sf(b, in.ConsumeFloatingPointInRange<float>(0.0f, 1.0f));
    case 3: return tova(tova_options{b.budget, b.slack, protection{b.sinks, b.recent, b.pinned}});
    case 4: {
      snapkv_options s;
      s.window = option(in, 6);
      s.budget = option(in, 22);
      s.kernel = 1 + 2 * small(in, 3);
      return snapkv(s);
    }
    default: {
      std::vector<char> retrieval(static_cast<std::size_t>(hkv));
      for (char& r : retrieval) r = in.ConsumeBool();
      return duo_attention(retrieval, duo_options{b.sinks, std::max<std::int64_t>(b.recent, 1), b.slack});
    }
  }
}

std::vector<float> row_weights(const any_policy& p, std::int64_t n) {
  if (const auto* a = std::get_if<a2sf>(&p)) return a2sf::row_weights(a->alpha(), n);
  if (std::holds_alternative<tova>(p)) return tova::last_row_weights(n);
  if (const auto* s = std::get_if<snapkv>(&p)) return s->window_row_weights(n);
  return {};
}

/// cached_attention's o against the reference over each KV head's rows.
void check_attention(const kv_cache<float>& cache, const tensor_view<const float, 4>& q,
                     const tensor_view<float, 4>& o, const attention_params& params) {
  const std::int64_t hkv = cache.heads(), group = q.extent(1) / hkv, sq = q.extent(2), d = cache.dim(),
                     dv = cache.value_dim();
  for (std::int64_t h = 0; h < hkv; ++h) {
    const std::int64_t len = cache.index().length(h);
    std::vector<float> kc(static_cast<std::size_t>(len * d)), vc(static_cast<std::size_t>(len * dv));
    for (std::int64_t j = 0; j < len; ++j) {
      std::copy_n(cache.key_row(h, j), d, kc.data() + j * d);
      std::copy_n(cache.value_row(h, j), dv, vc.data() + j * dv);
    }
    tensor<float, 4> ref({1, group, sq, dv});
    flash_attention(q.slice(1, h * group, (h + 1) * group), tensor_view<const float, 4>(kc.data(), {1, 1, len, d}),
                    tensor_view<const float, 4>(vc.data(), {1, 1, len, dv}), ref.view(), params, {}, reference{});
    expect_close(o.slice(1, h * group, (h + 1) * group), ref.view(), "cached_attention o");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  begin_input();
  kv_cache_options opt;
  opt.hkv = 1 + small(in, 2);
  opt.d = 1 + small(in, 16);
  opt.dv = small(in, 16);
  if (in.ConsumeBool()) {
    opt.page_size = std::int64_t{1} << in.ConsumeIntegralInRange<int>(0, 4);
    opt.num_pages = 1 + small(in, 40);
  } else {
    opt.capacity = 1 + small(in, 80);
  }
  if (in.ConsumeIntegralInRange<int>(0, 20) == 0) {
    std::int64_t* fields[] = {&opt.hkv, &opt.d, &opt.dv, &opt.capacity, &opt.page_size, &opt.num_pages};
    const std::int64_t invalid[] = {-1, 0, INT64_MIN, INT64_MAX, std::int64_t{1} << 62, std::int64_t{1} << 31};
    *fields[in.ConsumeIntegralInRange<std::size_t>(0, 5)] = invalid[in.ConsumeIntegralInRange<std::size_t>(0, 5)];
  }
  std::optional<kv_cache<float>> cache;
  if (!accepted([&] { cache.emplace(opt); })) return 0;
  std::optional<any_policy> policy;
  if (!accepted([&] { policy.emplace(make_policy(in, cache->heads())); })) return 0;
  const std::int64_t hkv = cache->heads(), d = cache->dim(), dv = cache->value_dim(), group = 1 + small(in, 2);

  for (int step = 0; step < 6 && in.remaining_bytes() > 0; ++step) {
    const std::int64_t n = 1 + small(in, 12);
    fuzz_view<3> k(in, {hkv, n, d}, true, false, false), v(in, {hkv, n, dv}, true, false, false);
    if (!accepted([&] { cache->append(k.in(), v.in()); })) return 0;  // full: the cache stays as it was
    fuzz_view<4> q(in, {1, hkv * group, n, d}, true, false, false), o(in, {1, hkv * group, n, dv}, false, false, false);
    const std::int64_t longest = cache->index().max_length();
    std::vector<float> weights(static_cast<std::size_t>(hkv * longest), -1.0f);
    const std::vector<float> rows = row_weights(*policy, n);
    key_weights kw;
    kw.out = tensor_view<float, 3>(weights.data(), {1, hkv, longest});
    if (!rows.empty()) kw.row_weights = tensor_view<const float, 1>(rows.data(), {n});
    attention_params params;
    params.causal = true;
    if (!accepted([&] { cached_attention(q.in(), *cache, o.view, params, {}, kw, cpu_native{pick_executor(in)}); }))
      fail("cached_attention rejected a valid call");
    check_attention(*cache, q.in(), o.view, params);
    const tensor_view<const float, 2> per_key(weights.data(), {hkv, longest});
    std::visit(
        [&](auto& p) {
          if (!accepted([&] {
                p.observe(cache->index(), per_key, n);
                evict(*cache, p);
              }))
            fail("observe or evict rejected what cached_attention produced");
        },
        *policy);
    for (std::int64_t h = 0; h < hkv; ++h)
      if (cache->index().length(h) > longest) fail("an eviction grew a head");
  }
  return 0;
}
