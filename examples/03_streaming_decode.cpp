// 03_streaming_decode: a long decode under a KV budget, with each eviction
// policy, against full attention over every token.
//
//   03_streaming_decode [steps]      (default 20000)
//
// One attention layer (8 query heads over 2 KV heads, d = 64, f16 cache)
// decodes `steps` synthetic tokens with a 256-row budget per head. Each step
// is what an engine does: append the token's K and V, attend (with key weights
// when the policy scores keys), let the policy observe, evict. Every 64 steps
// (slack 63) the policy cuts the cache back to its budget in one batch.
//
// The tokens are random, except that every 97th token is "important": its key
// leans towards a direction all queries share, so it keeps drawing attention
// long after it left the recent window, and its value carries that direction,
// so the layer's output depends on which important tokens the cache still holds. Score-based policies (H2O, A2SF, TOVA)
// keep such tokens; StreamingLLM keeps only sinks and the recent window. The
// error column is the relative L2 distance between the layer's output on the
// evicted cache and full attention over all tokens so far, at a few checkpoints.
// Positions stay original (no RoPE here), so the two see the same keys.
#include <attnkit/attnkit.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

using namespace attnkit;

namespace {

constexpr std::int64_t hq = 8, hkv = 2, d = 64, budget = 256, slack = 63;

/// The synthetic token stream: token t's K, V and Q rows, the same for every policy.
struct token_source {
  std::vector<float> shared;  // (d) the direction important keys and all queries lean towards

  token_source() : shared(d) {
    std::mt19937_64 rng(7);
    std::normal_distribution<float> n(0.0f, 1.0f);
    for (auto& x : shared) x = n(rng) / std::sqrt(static_cast<float>(d));
  }

  void token(std::int64_t t, tensor<float, 3>& k, tensor<float, 3>& v, tensor<float, 4>& q) const {
    std::mt19937_64 rng(1000003ull * static_cast<std::uint64_t>(t) + 11);
    std::normal_distribution<float> n(0.0f, 1.0f);
    const float lean = t % 97 == 0 ? 1.0f : 0.0f;
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t x = 0; x < d; ++x) {
        k(h, 0, x) = n(rng) + lean * shared[x] * std::sqrt(static_cast<float>(d));
        v(h, 0, x) = n(rng) + (lean > 0.0f ? 4.0f : 0.0f) * shared[x] * std::sqrt(static_cast<float>(d));
      }
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t x = 0; x < d; ++x) q(0, h, 0, x) = 0.5f * n(rng) + shared[x] * std::sqrt(static_cast<float>(d));
  }
};

struct run_result {
  double us_per_step = 0, mean_error = 0;
  std::int64_t max_rows = 0;
};

template <class Policy>
run_result run(const char* name, Policy& policy, std::int64_t steps, const token_source& src,
               std::int64_t capacity = budget + slack + 1) {
  kv_cache_options opt;
  opt.hkv = hkv;
  opt.d = d;
  opt.capacity = capacity;
  kv_cache<half> cache(opt);
  tensor<half, 4> k_all({1, hkv, steps, d}), v_all({1, hkv, steps, d});  // every token, for full attention
  tensor<float, 3> k({hkv, 1, d}), v({hkv, 1, d});
  tensor<float, 4> q({1, hq, 1, d}), o({1, hq, 1, d}), o_full({1, hq, 1, d});
  std::vector<float> weights(static_cast<std::size_t>(hkv * capacity));
  run_result r;
  double seconds = 0;
  int checks = 0;
  std::printf("%-10s %8s %10s %12s %10s\n", name, "step", "cache rows", "us / step", "rel error");
  for (std::int64_t t = 0; t < steps; ++t) {
    src.token(t, k, v, q);
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t x = 0; x < d; ++x) {
        k_all(0, h, t, x) = from_float<half>(k(h, 0, x));
        v_all(0, h, t, x) = from_float<half>(v(h, 0, x));
      }
    const auto t0 = std::chrono::steady_clock::now();
    cache.append(k.cview(), v.cview());
    const std::int64_t rows = cache.index().max_length();
    key_weights kw;
    if (Policy::wants_weights) kw.out = tensor_view<float, 3>(weights.data(), {1, hkv, rows});
    cached_attention(q.cview(), cache, o.view(), {}, {}, kw);
    policy.observe(cache.index(), tensor_view<const float, 2>(weights.data(), {hkv, rows}), 1);
    evict(cache, policy);
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.max_rows = std::max(r.max_rows, rows);

    if ((t + 1) % (steps / 8) != 0 && t + 1 != budget) continue;
    flash_attention(q.cview(), k_all.cview().slice(2, 0, t + 1), v_all.cview().slice(2, 0, t + 1), o_full.view());
    double diff = 0, ref = 0;
    for (std::int64_t i = 0; i < o.size(); ++i) {
      diff += std::pow(o.data()[i] - o_full.data()[i], 2.0);
      ref += std::pow(o_full.data()[i], 2.0);
    }
    const double err = std::sqrt(diff / ref);
    if (t + 1 == budget && err > 1e-6) {  // within budget nothing was evicted: the cache is the full context
      std::fprintf(stderr, "%s: error %.3g at step %lld, before any eviction\n", name, err,
                   static_cast<long long>(t + 1));
      std::exit(1);
    }
    if (t + 1 != budget) {
      r.mean_error += err;
      ++checks;
    }
    std::printf("%-10s %8lld %10lld %12.2f %10.3e\n", "", static_cast<long long>(t + 1),
                static_cast<long long>(cache.index().max_length()), 1e6 * seconds / static_cast<double>(t + 1), err);
  }
  r.us_per_step = 1e6 * seconds / static_cast<double>(steps);
  r.mean_error /= checks;
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t steps = argc > 1 ? std::atoll(argv[1]) : 20000;
  if (steps < 2 * budget) {
    std::fprintf(stderr, "usage: %s [steps >= %lld]\n", argv[0], static_cast<long long>(2 * budget));
    return 2;
  }
  const token_source src;
  std::vector<std::pair<std::string, run_result>> summary;
  {
    streaming_llm p({4, budget - 4, slack, {}});
    summary.emplace_back("streaming", run("streaming", p, steps, src));
  }
  {
    h2o p({budget, 0, 32, slack, {}});
    summary.emplace_back("h2o", run("h2o", p, steps, src));
  }
  {
    a2sf p({budget, 4, 32, slack, {}}, 0.95f);
    summary.emplace_back("a2sf 0.95", run("a2sf", p, steps, src));
  }
  {
    tova p({budget, slack, {}});
    summary.emplace_back("tova", run("tova", p, steps, src));
  }
  {
    duo_attention p({1, 0}, {4, budget - 4, slack});  // KV head 0 keeps everything, head 1 streams
    summary.emplace_back("duo 1 of 2", run("duo", p, steps, src, steps));
  }
  std::printf("\n%-12s %12s %14s %12s\n", "policy", "us / step", "max cache rows", "mean error");
  for (const auto& [name, r] : summary) {
    std::printf("%-12s %12.2f %14lld %12.3e\n", name.c_str(), r.us_per_step, static_cast<long long>(r.max_rows),
                r.mean_error);
    if (name != "duo 1 of 2" && r.max_rows > budget + slack + 1) return 1;  // never past budget + slack + the new token
  }
  return 0;
}
