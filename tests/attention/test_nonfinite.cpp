// What a key or token a row cannot see may hold: NaN or inf in a masked key's
// value (pools hand kernels garbage in unused slots), a later token of the same
// linear-attention chunk, or a finite gate far below the decay floor. The cpu
// backends must give exactly what the reference gives on every row that cannot
// see the bad input. Also d = 0, which every backend rejects alike.
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/linear/based.hpp"
#include "attnkit/attention/linear/linear.hpp"
#include "support/cpu_archs.hpp"
#include "support/linear_inputs.hpp"
#include "support/linear_oracle.hpp"
#include "support/paged_copy.hpp"
#include "support/random.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

constexpr float nan_value = std::numeric_limits<float>::quiet_NaN();
constexpr float inf_value = std::numeric_limits<float>::infinity();

class Nonfinite : public ::testing::TestWithParam<cpu_arch> {};

struct masked_case {
  std::int64_t hq, hkv, sq, skv, d, dv;
  attention_params params;
  std::vector<std::int64_t> bad_keys;  // their values get NaN, +inf, -inf in turn
};

/// q, k, v of a masked case, with the bad keys' values poisoned.
struct masked_inputs {
  tensor<float, 4> q, k, v;
  masked_inputs(const masked_case& c, std::mt19937_64& rng)
      : q({1, c.hq, c.sq, c.d}), k({1, c.hkv, c.skv, c.d}), v({1, c.hkv, c.skv, c.dv}) {
    for (auto* t : {&q, &k, &v}) fill_normal(t->data(), t->size(), rng);
    const float poison[] = {nan_value, inf_value, -inf_value};
    for (std::size_t n = 0; n < c.bad_keys.size(); ++n)
      for (std::int64_t h = 0; h < c.hkv; ++h)
        for (std::int64_t y = 0; y < c.dv; ++y) v(0, h, c.bad_keys[n], y) = poison[(n + y) % 3];
  }
};

/// Row (h, i) sees no bad key: cpu equals the reference there (o = 0 and lse = -inf
/// exactly for a row that sees no key at all).
void expect_clean_rows(const masked_case& c, const tensor<float, 4>& o, const tensor<float, 3>& lse,
                       const tensor<float, 4>& ref_o, const tensor<float, 3>& ref_lse) {
  const attention_variant var = make_variant(c.params, c.sq, c.skv, c.d);
  std::int64_t checked = 0;
  for (std::int64_t h = 0; h < c.hq; ++h)
    for (std::int64_t i = 0; i < c.sq; ++i) {
      bool sees_bad = false, sees_any = false;
      for (std::int64_t j = 0; j < c.skv; ++j) sees_any |= var.mask.visible(i, j);
      for (std::int64_t j : c.bad_keys) sees_bad |= var.mask.visible(i, j);
      if (sees_bad) continue;
      ++checked;
      if (!sees_any) {
        EXPECT_EQ(lse(0, h, i), -inf_value) << "row " << i << " head " << h;
      }
      if (std::isfinite(ref_lse(0, h, i))) {
        EXPECT_NEAR(lse(0, h, i), ref_lse(0, h, i), 1e-5f * (1 + std::abs(ref_lse(0, h, i))));
      } else {
        EXPECT_EQ(lse(0, h, i), ref_lse(0, h, i));
      }
      for (std::int64_t y = 0; y < c.dv; ++y) {
        ASSERT_TRUE(std::isfinite(o(0, h, i, y))) << "row " << i << " head " << h << " col " << y;
        if (!sees_any) {
          EXPECT_EQ(o(0, h, i, y), 0.0f);
        }
        EXPECT_NEAR(o(0, h, i, y), ref_o(0, h, i, y), 1e-5f * (1 + std::abs(ref_o(0, h, i, y))));
      }
    }
  EXPECT_GT(checked, 0) << "the case must have rows that cannot see a bad key";
}

std::vector<masked_case> masked_cases() {
  attention_params causal;
  causal.causal = true;
  attention_params window = causal;
  window.window_left = 5;
  window.sinks = 2;
  return {
      {1, 1, 6, 4, 16, 16, causal, {3}},            // the smallest: row 0 sees nothing, row 2 sees key 0 only
      {8, 2, 2, 37, 32, 24, causal, {36}},          // decode path, GQA 4, two query rows
      {2, 1, 40, 33, 24, 40, causal, {32, 20}},     // prefill, rows 0..6 see nothing
      {2, 2, 150, 300, 16, 32, causal, {299, 170}},  // prefill over several key tiles
      {4, 1, 3, 90, 16, 16, window, {40, 88}},      // decode with a window and sinks
      {1, 1, 130, 130, 8, 16, window, {100, 10}},   // prefill with a window and sinks
  };
}

TEST_P(Nonfinite, MaskedKeysNeverReachARow) {
  with_cpu_arch(GetParam(), [&](auto arch) {
    using A = decltype(arch);
    for (const masked_case& c : masked_cases()) {
      seeded_rng s;
      std::mt19937_64& rng = s.rng;
      const masked_inputs in(c, rng);
      tensor<float, 4> o({1, c.hq, c.sq, c.dv}), ref_o({1, c.hq, c.sq, c.dv});
      tensor<float, 3> lse({1, c.hq, c.sq}), ref_lse({1, c.hq, c.sq});
      flash_attention(in.q.cview(), in.k.cview(), in.v.cview(), ref_o.view(), c.params, ref_lse.view(), reference{});
      for (int threads : {1, 2}) {
        SCOPED_TRACE(::testing::Message() << "sq " << c.sq << " skv " << c.skv << " threads " << threads);
        const cpu<A> backend{threads == 1 ? executor::serial() : two_threads()};
        flash_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), c.params, lse.view(), backend);
        expect_clean_rows(c, o, lse, ref_o, ref_lse);
        // Paged, with pages of 8 rows whose unused slots hold NaN too.
        const paged_copy<float> pk(in.k.cview(), {c.skv}, 8, rng), pv(in.v.cview(), {c.skv}, 8, rng);
        flash_attention(in.q.cview(), pk.view, pv.view, o.view(), c.params, lse.view(), backend);
        expect_clean_rows(c, o, lse, ref_o, ref_lse);
      }
    }
  });
}

/// Outputs before token `bad` of a chunk equal those of the clean input, bit for bit.
template <class Run>
void expect_causal(std::int64_t t, std::int64_t V, std::int64_t bad, tensor<float, 4>& v, Run&& run) {
  tensor<float, 4> clean({1, 2, t, V}), dirty({1, 2, t, V});
  run(clean);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t y = 0; y < V; ++y) v(0, h, bad, y) = y % 2 ? nan_value : inf_value;
  run(dirty);
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t r = 0; r < bad; ++r)
      for (std::int64_t y = 0; y < V; ++y)
        ASSERT_EQ(dirty(0, h, r, y), clean(0, h, r, y)) << "token " << r << " head " << h << " col " << y;
}

TEST_P(Nonfinite, ALaterTokenNeverReachesAnEarlierOne) {
  with_cpu_arch(GetParam(), [&](auto arch) {
    using A = decltype(arch);
    const cpu<A> backend{executor::serial()};
    for (grain g : {grain::none, grain::token, grain::channel}) {
      seeded_rng s;
      linear_inputs in(1, 2, 45, 20, 24, s.rng);
      linear_params p;
      p.chunk = 16;
      const linear_decay decay = in.decay(g);
      SCOPED_TRACE(name(g));
      expect_causal(in.t, in.V, 20, in.v, [&](tensor<float, 4>& o) {
        linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), decay, {}, p, backend);
      });
    }
    seeded_rng s;
    linear_inputs in(1, 2, 45, 8, 24, s.rng);
    based_params bp;
    bp.chunk = 16;
    expect_causal(in.t, in.V, 20, in.v, [&](tensor<float, 4>& o) {
      based_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), {}, bp, backend);
    });
  });
}

/// cpu and reference against the fp64 recurrence on gates far below the decay floor.
TEST_P(Nonfinite, VeryNegativeFiniteGatesActAsResets) {
  with_cpu_arch(GetParam(), [&](auto arch) {
    using A = decltype(arch);
    seeded_rng s;
    for (grain g : {grain::token, grain::channel}) {
      for (float huge : {-1e9f, -1.7e31f, -90.0f, -3.4e38f}) {
        linear_inputs in(1, 2, 37, 5, 3, s.rng);
        for (std::int64_t h = 0; h < 2; ++h)
          for (std::int64_t t : {1, 20}) {  // early, and mid-chunk of the second chunk
            in.g_token(0, h, t) = huge;
            for (std::int64_t x = 0; x < in.K; ++x) in.g_channel(0, h, t, x) = x % 2 ? huge : -3.98f;
          }
        const linear_decay decay = in.decay(g);
        linear_params p;
        p.chunk = 16;
        const double scale = 1.0 / std::sqrt(5.0);
        const linear_oracle_result want = linear_oracle(in.q.cview(), in.k.cview(), in.v.cview(), decay, scale, false, 0);
        tensor<float, 4> o({1, 2, in.t, in.V});
        const auto check = [&](const char* what) {
          SCOPED_TRACE(::testing::Message() << what << " grain " << name(g) << " gate " << huge);
          EXPECT_LE(relative_l2(o.data(), want.o), 1e-5);
        };
        linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), decay, {}, p, cpu<A>{});
        check("cpu");
        linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), decay, {}, p, reference{});
        check("reference");
      }
    }
  });
}

/// The smallest case: K = V = 1, q = k = v = 1, g = [0, -1e9, -1, -1].
TEST_P(Nonfinite, AGateOfMinusOneBillionIsAReset) {
  with_cpu_arch(GetParam(), [&](auto arch) {
    using A = decltype(arch);
    tensor<float, 4> ones({1, 1, 4, 1}, 1.0f), o({1, 1, 4, 1});
    tensor<float, 3> g({1, 1, 4});
    const float gates[] = {0.0f, -1e9f, -1.0f, -1.0f};
    for (int t = 0; t < 4; ++t) g(0, 0, t) = gates[t];
    linear_decay decay;
    decay.per_token = g.cview();
    linear_attention(ones.cview(), ones.cview(), ones.cview(), o.view(), decay, {}, {}, cpu<A>{});
    // After the reset: S_1 = 1, S_2 = e^-1 + 1, S_3 = e^-2 + e^-1 + 1 (scale 1/sqrt(1) = 1).
    EXPECT_FLOAT_EQ(o(0, 0, 0, 0), 1.0f);
    EXPECT_FLOAT_EQ(o(0, 0, 1, 0), 1.0f);
    EXPECT_FLOAT_EQ(o(0, 0, 2, 0), static_cast<float>(std::exp(-1.0) + 1.0));
    EXPECT_FLOAT_EQ(o(0, 0, 3, 0), static_cast<float>(std::exp(-2.0) + std::exp(-1.0) + 1.0));
  });
}

TEST_P(Nonfinite, AHeadDimOfZeroIsRejectedByEveryBackend) {
  with_cpu_arch(GetParam(), [&](auto arch) {
    using A = decltype(arch);
    tensor<float, 4> q({1, 1, 3, 0}), v({1, 1, 3, 4}), o({1, 1, 3, 4});
    EXPECT_THROW(flash_attention(q.cview(), q.cview(), v.cview(), o.view(), {}, {}, reference{}), error);
    EXPECT_THROW(flash_attention(q.cview(), q.cview(), v.cview(), o.view(), {}, {}, cpu<A>{}), error);
    EXPECT_THROW(based_attention(q.cview(), q.cview(), v.cview(), o.view(), {}, based_params{}, reference{}), error);
    EXPECT_THROW(based_attention(q.cview(), q.cview(), v.cview(), o.view(), {}, based_params{}, cpu<A>{}), error);
  });
}

INSTANTIATE_TEST_SUITE_P(Archs, Nonfinite, ::testing::ValuesIn(compiled_cpu_archs()),
                         [](const auto& info) { return std::string(cpu_arch_name(info.param)); });

}  // namespace
}  // namespace attnkit::test
