// An installed attnkit's run-time dispatch: built for the baseline arch with
// attnkit_add_cpu_dispatch, it runs flash_attention on the best arch of this
// CPU and checks it against the reference backend.
#include <attnkit/attnkit.hpp>
#include <attnkit/cpu_dispatch.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  const std::int64_t hq = 4, hkv = 2, sq = 3, skv = 37, d = 16;
  std::vector<float> q(hq * sq * d), k(hkv * skv * d), v(hkv * skv * d), o(hq * sq * d), want(hq * sq * d);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = std::sin(0.37f * static_cast<float>(i));
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = std::cos(0.11f * static_cast<float>(i));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i % 13) - 6.0f;
  const auto qv = attnkit::make_bhsd(q.data(), 1, hq, sq, d), kv = attnkit::make_bhsd(k.data(), 1, hkv, skv, d);
  const auto vv = attnkit::make_bhsd(v.data(), 1, hkv, skv, d);
  attnkit::attention_params p;
  p.causal = true;
  try {
    attnkit::flash_attention(qv, kv, vv, attnkit::make_bhsd(o.data(), 1, hq, sq, d), p, {}, attnkit::cpu_dispatch{});
  } catch (const attnkit::error& e) {  // a CPU below every compiled arch
    std::printf("%s\n", e.what());
    return 0;
  }
  attnkit::flash_attention(qv, kv, vv, attnkit::make_bhsd(want.data(), 1, hq, sq, d), p, {}, attnkit::reference{});
  for (std::size_t i = 0; i < o.size(); ++i)
    if (std::abs(o[i] - want[i]) > 1e-5f * (1.0f + std::abs(want[i]))) {
      std::printf("cpu_dispatch (%s) differs from the reference at %zu\n", attnkit::cpu_dispatch_arch(), i);
      return 1;
    }
  std::printf("attnkit consumer: cpu_dispatch on %s ok\n", attnkit::cpu_dispatch_arch());
  return 0;
}
