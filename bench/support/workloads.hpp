// The LLM-shaped problems benchmarks and the tour run, their FLOP and byte
// counts (DESIGN §9), and random inputs for them.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "attnkit/attention/params.hpp"
#include "support/problem.hpp"
#include "support/random.hpp"

namespace attnkit::bench {

using test::problem;

/// 4 b hq sq skv d, halved when causal (the masked half is skipped, not computed).
inline double attention_flops(const problem& p, bool causal) {
  const double f = 4.0 * p.b * p.hq * p.sq * p.skv * p.d;
  return causal ? f / 2 : f;
}

/// Bytes of K and V read once.
inline double kv_bytes(const problem& p, std::size_t k_elem, std::size_t v_elem) {
  return static_cast<double>(p.b) * p.hkv * p.skv * (p.d * k_elem + p.dv * v_elem);
}

inline std::string shape_string(const problem& p) {
  return "b" + std::to_string(p.b) + " hq" + std::to_string(p.hq) + " hkv" + std::to_string(p.hkv) + " sq" +
         std::to_string(p.sq) + " skv" + std::to_string(p.skv) + " d" + std::to_string(p.d);
}

/// Q, K, V with random normal values and an output buffer, in BHSD memory.
template <class TQ, class TK, class TV, class TO>
struct attention_inputs {
  test::bhsd_tensor<TQ> q;
  test::bhsd_tensor<TK> k;
  test::bhsd_tensor<TV> v;
  test::bhsd_tensor<TO> o;

  attention_inputs(const problem& p, std::uint64_t seed)
      : q(p.b, p.hq, p.sq, p.d, p.lay),
        k(p.b, p.hkv, p.skv, p.d, p.lay),
        v(p.b, p.hkv, p.skv, p.dv, p.lay),
        o(p.b, p.hq, p.sq, p.dv, p.lay) {
    std::mt19937_64 rng(seed);
    test::fill_normal(q.storage.data(), q.storage.size(), rng);
    test::fill_normal(k.storage.data(), k.storage.size(), rng);
    test::fill_normal(v.storage.data(), v.storage.size(), rng);
  }
};

}  // namespace attnkit::bench
