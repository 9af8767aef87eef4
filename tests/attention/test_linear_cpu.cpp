// Linear attention on cpu<Arch>: chunkwise prefill and the fused decode step
// against the fp64 recurrence, for every decay grain, chunk sizes that do and
// do not divide t, explicit states, resets, and thread-count independence.
#include <gtest/gtest.h>

#include <algorithm>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "attnkit/attention/linear/gla.hpp"
#include "attnkit/attention/linear/linear.hpp"
#include "attnkit/attention/linear/varlen.hpp"
#include "support/cpu_archs.hpp"
#include "support/expect_error.hpp"
#include "support/linear_inputs.hpp"
#include "support/linear_oracle.hpp"
#include "support/seeded.hpp"

namespace attnkit {
namespace {

using test::grain;
using test::linear_inputs;

constexpr double tol = 1e-5;

struct cpu_case {
  std::int64_t t, K, V, chunk;
};

class LinearCpu : public ::testing::TestWithParam<test::cpu_arch> {};

TEST_P(LinearCpu, ChunkwiseAndDecodeMatchTheFp64Recurrence) {
  test::with_cpu_arch(GetParam(), [](auto arch) {
    using Arch = decltype(arch);
    test::seeded_rng s;
    const cpu_case cases[] = {{1, 16, 16, 64},  {63, 16, 60, 16},   {63, 60, 16, 1},   {130, 64, 64, 64},
                              {130, 64, 64, 40}, {200, 128, 128, 300}, {1000, 128, 128, 64}, {97, 20, 33, 33},
                              {1, 20, 33, 8},    {1, 128, 300, 64}};  // decode with column tails
    for (const cpu_case& c : cases)
      for (const grain g : {grain::none, grain::head, grain::token, grain::channel})
        for (const bool normalize : {false, true}) {
          SCOPED_TRACE("t " + std::to_string(c.t) + " K " + std::to_string(c.K) + " V " + std::to_string(c.V) +
                       " chunk " + std::to_string(c.chunk) + " decay " + test::name(g) +
                       (normalize ? " normalized" : ""));
          const linear_inputs in(1, 2, c.t, c.K, c.V, s.rng, normalize);
          const tensor<float, 4> s0 = test::random_state(1, 2, c.K, c.V, s.rng);
          tensor<float, 3> z0({1, 2, c.K});
          std::fill(z0.data(), z0.data() + z0.size(), 3.0f);
          linear_params p;
          p.normalize = normalize;
          p.chunk = c.chunk;
          const linear_decay d = in.decay(g);
          const auto oracle = test::linear_oracle(in.q.cview(), in.k.cview(), in.v.cview(), d,
                                                  1.0 / std::sqrt(double(c.K)), normalize, p.eps, s0.cview(),
                                                  normalize ? z0.cview() : tensor_view<const float, 3>{});
          tensor<float, 4> o({1, 2, c.t, c.V}), st({1, 2, c.K, c.V});
          tensor<float, 3> z({1, 2, c.K});
          std::copy(s0.data(), s0.data() + s0.size(), st.data());
          std::copy(z0.data(), z0.data() + z0.size(), z.data());
          linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), d,
                           {st.view(), normalize ? z.view() : tensor_view<float, 3>{}}, p, cpu<Arch>{});
          EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol);
          EXPECT_LT(test::relative_l2(st.data(), oracle.s), tol);
          if (normalize) {
            EXPECT_LT(test::relative_l2(z.data(), oracle.z), tol);
          }
        }
  });
}

TEST_P(LinearCpu, PrefillThenDecodeStepsEqualsOnePrefill) {
  test::with_cpu_arch(GetParam(), [](auto arch) {
    using Arch = decltype(arch);
    test::seeded_rng s;
    for (const grain g : {grain::head, grain::channel})
      for (const bool normalize : {false, true}) {
        SCOPED_TRACE(std::string("decay ") + test::name(g) + (normalize ? " normalized" : ""));
        const std::int64_t t = 150, T = 111, K = 32, V = 48;
        const linear_inputs in(2, 2, t, K, V, s.rng, normalize);
        linear_params p;
        p.normalize = normalize;
        const auto oracle = test::linear_oracle(in.q.cview(), in.k.cview(), in.v.cview(), in.decay(g),
                                                1.0 / std::sqrt(double(K)), normalize, p.eps);
        tensor<float, 4> o({2, 2, t, V}), padded({2, 2, K, V + 5}), st({2, 2, K, V});  // state rows V + 5 apart
        tensor<float, 3> z({2, 2, K});
        std::fill(padded.data(), padded.data() + padded.size(), 0.0f);
        std::fill(z.data(), z.data() + z.size(), 0.0f);
        const linear_state state{padded.view().slice(3, 0, V), normalize ? z.view() : tensor_view<float, 3>{}};
        const auto run = [&](std::int64_t t0, std::int64_t t1) {
          linear_decay d = in.decay(g);
          if (g == grain::channel) d.per_channel = d.per_channel.slice(2, t0, t1);
          linear_attention(in.q.cview().slice(2, t0, t1), in.k.cview().slice(2, t0, t1),
                           in.v.cview().slice(2, t0, t1), o.view().slice(2, t0, t1), d, state, p, cpu<Arch>{});
        };
        run(0, T);
        for (std::int64_t i = T; i < t; ++i) run(i, i + 1);
        for (std::int64_t i = 0; i < st.size(); ++i) st.data()[i] = padded.data()[i / V * (V + 5) + i % V];
        EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol);
        EXPECT_LT(test::relative_l2(st.data(), oracle.s), tol);
      }
  });
}

TEST_P(LinearCpu, ResetGatesAndStrongGatesStayExact) {
  test::with_cpu_arch(GetParam(), [](auto arch) {
    using Arch = decltype(arch);
    test::seeded_rng s;
    for (const float tau : {0.1f, 1.0f, 10.0f}) {
      SCOPED_TRACE("tau " + std::to_string(tau));
      linear_inputs in(1, 2, 140, 32, 16, s.rng);
      std::normal_distribution<float> n(0.0f, 3.0f);
      for (std::int64_t i = 0; i < in.g_channel.size(); ++i) in.g_channel.data()[i] = n(s.rng);
      gla_log_gates(in.g_channel.view(), tau);
      in.g_channel(0, 1, 77, 5) = -std::numeric_limits<float>::infinity();  // one channel forgets everything
      in.g_token(0, 0, 20) = -std::numeric_limits<float>::infinity();
      for (const grain g : {grain::channel, grain::token}) {
        const auto oracle = test::linear_oracle(in.q.cview(), in.k.cview(), in.v.cview(), in.decay(g),
                                                1.0 / std::sqrt(32.0), false, 0.0);
        tensor<float, 4> o({1, 2, 140, 16});
        linear_params p;
        linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), in.decay(g), {}, p, cpu<Arch>{});
        EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol) << test::name(g);
      }
    }
  });
}

TEST_P(LinearCpu, ResultsDoNotDependOnTheThreadCount) {
  test::with_cpu_arch(GetParam(), [](auto arch) {
    using Arch = decltype(arch);
    test::seeded_rng s;
    const linear_inputs in(2, 3, 90, 24, 40, s.rng);
    for (const std::int64_t t : {std::int64_t{90}, std::int64_t{1}}) {
      tensor<float, 4> one({2, 3, t, 40}), two({2, 3, t, 40});
      const auto part = [&](const tensor<float, 4>& x) { return x.cview().slice(2, 0, t); };
      linear_decay d = in.decay(grain::channel);
      d.per_channel = d.per_channel.slice(2, 0, t);
      linear_attention(part(in.q), part(in.k), part(in.v), one.view(), d, {}, {}, cpu<Arch>{executor::serial(), {}});
      linear_attention(part(in.q), part(in.k), part(in.v), two.view(), d, {}, {},
                       cpu<Arch>{executor::custom(2, [](std::int64_t n, const std::function<void(std::int64_t)>& f) {
                                   for (std::int64_t i = n; i-- > 0;) f(i);  // another order, two slots
                                 }),
                                 {}});
      EXPECT_TRUE(std::equal(one.data(), one.data() + one.size(), two.data())) << "t " << t;
    }
  });
}

INSTANTIATE_TEST_SUITE_P(Archs, LinearCpu, ::testing::ValuesIn(test::compiled_cpu_archs()),
                         [](const auto& info) { return std::string(test::cpu_arch_name(info.param)); });

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

TEST(LinearVarlen, PackedSequencesEqualPerSequenceCalls) {
  test::seeded_rng s;
  const std::vector<std::int64_t> cu{0, 1, 1, 70, 71, 200};  // a decode step, an empty slot, prefills
  const std::int64_t total = cu.back(), n = static_cast<std::int64_t>(cu.size()) - 1, K = 20, V = 36;
  const test::linear_inputs in(1, 3, total, K, V, s.rng, true);
  for (const bool normalize : {false, true}) {
    linear_params p;
    p.normalize = normalize;
    p.chunk = 32;
    tensor<float, 4> packed({1, 3, total, V}), looped({1, 3, total, V});
    tensor<float, 4> s1 = test::random_state(n, 3, K, V, s.rng), s2({n, 3, K, V});
    std::copy(s1.data(), s1.data() + s1.size(), s2.data());
    tensor<float, 3> z1({n, 3, K}), z2({n, 3, K});
    std::fill(z1.data(), z1.data() + z1.size(), 2.0f);
    std::fill(z2.data(), z2.data() + z2.size(), 2.0f);
    const linear_state st1{s1.view(), normalize ? z1.view() : tensor_view<float, 3>{}};
    linear_attention_varlen(in.q.cview(), in.k.cview(), in.v.cview(), packed.view(),
                            tensor_view<const std::int64_t, 1>(cu.data(), {n + 1}), in.decay(grain::channel), st1, p,
                            cpu<xsimd::default_arch>{});
    for (std::int64_t i = 0; i < n; ++i) {
      if (cu[i] == cu[i + 1]) continue;
      linear_decay d = in.decay(grain::channel);
      d.per_channel = d.per_channel.slice(2, cu[i], cu[i + 1]);
      const auto rows = [&](const tensor<float, 4>& x) { return x.cview().slice(2, cu[i], cu[i + 1]); };
      linear_attention(rows(in.q), rows(in.k), rows(in.v), looped.view().slice(2, cu[i], cu[i + 1]), d,
                       {s2.view().slice(0, i, i + 1), normalize ? z2.view().slice(0, i, i + 1) : tensor_view<float, 3>{}},
                       p, cpu<xsimd::default_arch>{});
    }
    EXPECT_TRUE(std::equal(packed.data(), packed.data() + packed.size(), looped.data()));
    EXPECT_TRUE(std::equal(s1.data(), s1.data() + s1.size(), s2.data()));
  }
  tensor<float, 4> o({1, 3, total, V});
  const std::vector<std::int64_t> bad{0, 5, 3, total};
  test::expect_error(
      [&] {
        linear_attention_varlen(in.q.cview(), in.k.cview(), in.v.cview(), o.view(),
                                tensor_view<const std::int64_t, 1>(bad.data(), {4}), {}, {}, {},
                                cpu<xsimd::default_arch>{});
      },
      "attnkit: linear_attention_varlen: cu_seqlens must not decrease, got 5 then 3");

  // A bad gate in the last sequence is reported before any sequence is written, on both backends.
  tensor<float, 4> g({1, 3, total, K});
  std::copy(in.g_channel.data(), in.g_channel.data() + g.size(), g.data());
  g(0, 2, total - 1, K - 1) = 0.5f;
  linear_decay poisoned;
  poisoned.per_channel = g.cview();
  const auto untouched = [&](const auto& backend) {
    std::fill(o.data(), o.data() + o.size(), 7.0f);
    EXPECT_THROW(linear_attention_varlen(in.q.cview(), in.k.cview(), in.v.cview(), o.view(),
                                         tensor_view<const std::int64_t, 1>(cu.data(), {n + 1}), poisoned, {}, {},
                                         backend),
                 error);
    EXPECT_TRUE(std::all_of(o.data(), o.data() + o.size(), [](float x) { return x == 7.0f; }));
  };
  untouched(cpu<xsimd::default_arch>{});
  untouched(reference{});
}

}  // namespace
}  // namespace attnkit

namespace attnkit {
namespace {

// Per-channel gates of a long call (2^20 and more) are checked on the call's
// threads; one bad gate anywhere is still found, named, and stops the call
// before it writes.
TEST(LinearCpuInputs, ABadGateInALargeCallIsFoundBeforeAnyOutput) {
  test::seeded_rng s;
  const std::int64_t h = 2, t = 4096, K = 128, V = 8;
  const test::linear_inputs in(1, h, t, K, V, s.rng);
  tensor<float, 4> g({1, h, t, K}), o({1, h, t, V});
  std::copy(in.g_channel.data(), in.g_channel.data() + g.size(), g.data());
  std::uniform_int_distribution<std::int64_t> at(0, t * K - 1);
  for (std::int64_t head = 0; head < h; ++head) {
    for (const float bad : {0.25f, std::numeric_limits<float>::quiet_NaN()}) {
      const std::int64_t i = head * t * K + at(s.rng);  // somewhere in this head's gates
      const float kept = g.data()[i];
      g.data()[i] = bad;
      linear_decay d;
      d.per_channel = g.cview();
      std::fill(o.data(), o.data() + o.size(), 7.0f);
      test::expect_error(
          [&] { linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), d, {}, {}, cpu<xsimd::default_arch>{}); },
          std::string("attnkit: linear_attention: decay.per_channel entries must be log decays <= 0 (or -inf), got ") +
              (std::isnan(bad) ? "nan" : "0.25"));
      EXPECT_TRUE(std::all_of(o.data(), o.data() + o.size(), [](float x) { return x == 7.0f; }));
      g.data()[i] = kept;
    }
  }
}

TEST(LinearCpuInputs, HalfPrecisionInputsAndOutputs) {
  test::seeded_rng s;
  const linear_inputs in(1, 2, 150, 64, 48, s.rng);
  const tensor<half, 4> q = test::rounded<half>(in.q), k = test::rounded<half>(in.k);
  const tensor<bfloat16, 4> v = test::rounded<bfloat16>(in.v);
  const linear_decay d = in.decay(grain::channel);
  const auto oracle = test::linear_oracle(q.cview(), k.cview(), v.cview(), d, 1.0 / 8.0, false, 0.0);
  tensor<float, 4> o({1, 2, 150, 48});
  tensor<bfloat16, 4> o16({1, 2, 150, 48});
  linear_attention(q.cview(), k.cview(), v.cview(), o.view(), d, {}, {}, cpu<xsimd::default_arch>{});
  EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol);  // the oracle reads the same rounded inputs
  linear_attention(q.cview(), k.cview(), v.cview(), o16.view(), d, {}, {}, cpu<xsimd::default_arch>{});
  EXPECT_LT(test::relative_l2(o16.data(), oracle.o), 1e-2);
}

TEST(LinearCpuInputs, FutureTokensLeaveEarlierOutputsAlone) {
  test::seeded_rng s;
  linear_inputs in(1, 2, 130, 32, 32, s.rng);
  tensor<float, 4> before({1, 2, 130, 32}), after({1, 2, 130, 32});
  const linear_decay d = in.decay(grain::channel);
  linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), before.view(), d, {}, {}, cpu<xsimd::default_arch>{});
  for (std::int64_t x = 0; x < 32; ++x) {
    in.k(0, 0, 100, x) += 1.0f;
    in.v(0, 0, 100, x) -= 1.0f;
  }
  linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), after.view(), d, {}, {}, cpu<xsimd::default_arch>{});
  for (std::int64_t t = 0; t < 130; ++t) {
    bool same = true;
    for (std::int64_t y = 0; y < 32; ++y) same &= before(0, 0, t, y) == after(0, 0, t, y);
    EXPECT_EQ(same, t < 100) << "token " << t;
  }
}

}  // namespace
}  // namespace attnkit
