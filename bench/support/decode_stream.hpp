// A decode loop over a kv_cache held at its budget: each step appends one
// token, attends (with key weights when the policy wants them), observes and
// evicts. It times the attention and the policy's share (observe + select +
// compact) apart, for the eviction benchmark and the tour.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "attnkit/cached_attention.hpp"
#include "attnkit/kv/evict.hpp"
#include "attnkit/kv/policy/a2sf.hpp"
#include "attnkit/kv/policy/duo.hpp"
#include "attnkit/kv/policy/h2o.hpp"
#include "attnkit/kv/policy/streaming.hpp"
#include "attnkit/kv/policy/tova.hpp"
#include "support/random.hpp"
#include "support/machine.hpp"

namespace attnkit::bench {

struct decode_stream {
  static constexpr std::int64_t hkv = 8, hq = 32, d = 128, tokens = 16;  // tokens: a pool the steps cycle through

  kv_cache<half> cache;
  tensor<float, 4> k_pool{{tokens, hkv, 1, d}}, v_pool{{tokens, hkv, 1, d}}, q_pool{{tokens, hq, 1, d}};
  tensor<float, 4> o{{1, hq, 1, d}};
  std::vector<float> weights;  // (1, hkv, longest head)
  std::vector<unsigned char> scratch;
  cpu_native backend;
  std::int64_t next = 0;
  double attention_s = 0, policy_s = 0;

  /// A cache of `budget` random rows per head with room for `headroom` more.
  decode_stream(std::int64_t budget, std::int64_t headroom, std::uint64_t seed)
      : cache(options(budget + headroom)), weights(static_cast<std::size_t>(hkv * (budget + headroom))) {
    std::mt19937_64 rng(seed);
    for (auto* t : {&k_pool, &v_pool, &q_pool}) test::fill_normal(t->data(), t->size(), rng);
    tensor<float, 3> k({hkv, budget, d}), v({hkv, budget, d});
    test::fill_normal(k.data(), k.size(), rng);
    test::fill_normal(v.data(), v.size(), rng);
    cache.append(k.cview(), v.cview());
  }

  static kv_cache_options options(std::int64_t capacity) {
    kv_cache_options opt;
    opt.hkv = hkv;
    opt.d = d;
    opt.capacity = capacity;
    return opt;
  }

  /// One decode step; adds its attention and policy seconds to the totals.
  template <class Policy>
  void step(Policy& policy) {
    const std::int64_t t = next++ % tokens;
    const auto token = [&](const tensor<float, 4>& pool) {
      return tensor_view<const float, 3>(&pool(t, 0, 0, 0), {hkv, 1, d});
    };
    cache.append(token(k_pool), token(v_pool));
    const std::int64_t longest = cache.index().max_length();
    key_weights kw;
    if (Policy::wants_weights) kw.out = tensor_view<float, 3>(weights.data(), {1, hkv, longest});
    const tensor_view<const float, 4> q(&q_pool(t, 0, 0, 0), {1, hq, 1, d});
    const std::size_t bytes = cached_attention_workspace_size(q, cache, o.view(), {}, kw, backend);
    if (bytes > scratch.size()) scratch.resize(bytes + bytes / 8);  // grows a few times, then stays
    backend.scratch = {scratch.data(), scratch.size()};
    const auto t0 = std::chrono::steady_clock::now();
    cached_attention(q, cache, o.view(), {}, {}, kw, backend);
    const auto t1 = std::chrono::steady_clock::now();
    policy.observe(cache.index(), tensor_view<const float, 2>(weights.data(), {hkv, longest}), 1);
    evict(cache, policy);
    policy_s += seconds_since(t1);
    attention_s += std::chrono::duration<double>(t1 - t0).count();
  }
};

enum class policy_kind { streaming, h2o, a2sf, tova, duo };

inline const char* policy_name(policy_kind k) {
  constexpr const char* names[] = {"streaming", "h2o", "a2sf", "tova", "duo"};
  return names[static_cast<int>(k)];
}

/// f(policy) with a policy of that kind at `budget` rows per head: StreamingLLM
/// with 4 sinks, H2O and A2SF (alpha 0.95) with a 64-row recent window, TOVA, and
/// DuoAttention with half the heads streaming (64 sinks + 256 recent).
template <class F>
void with_policy(policy_kind kind, std::int64_t budget, std::int64_t slack, F&& f) {
  switch (kind) {
    case policy_kind::streaming: {
      streaming_llm p({4, budget - 4, slack, {}});
      return f(p);
    }
    case policy_kind::h2o: {
      h2o p({budget, 0, 64, slack, {}});
      return f(p);
    }
    case policy_kind::a2sf: {
      a2sf p({budget, 0, 64, slack, {}}, 0.95f);
      return f(p);
    }
    case policy_kind::tova: {
      tova p({budget, slack, {}});
      return f(p);
    }
    case policy_kind::duo: {
      duo_attention p({1, 0, 1, 0, 1, 0, 1, 0}, {64, 256, slack});
      return f(p);
    }
  }
}

}  // namespace attnkit::bench
