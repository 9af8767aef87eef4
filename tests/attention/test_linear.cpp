// Linear attention (reference backend): the parallel, chunkwise and recurrent
// forms against the fp64 recurrence, state passing, and the variants' invariants.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attnkit/attention/linear/gla.hpp"
#include "attnkit/attention/linear/lightning.hpp"
#include "attnkit/attention/linear/linear.hpp"
#include "attnkit/core/tensor.hpp"
#include "support/expect_error.hpp"
#include "support/linear_inputs.hpp"
#include "support/linear_oracle.hpp"
#include "support/seeded.hpp"

namespace attnkit {
namespace {

using test::grain;
using test::linear_inputs;
using test::name;
using test::random_state;


constexpr double tol = 1e-5;

struct form_case {
  std::int64_t t, K, V, chunk;
};

TEST(LinearAttention, ThreeFormsMatchTheFp64Recurrence) {
  test::seeded_rng s;
  const form_case cases[] = {{1, 16, 16, 64}, {63, 16, 60, 16}, {63, 60, 16, 1},
                             {130, 64, 64, 64}, {130, 64, 64, 7}, {200, 128, 128, 300}};
  for (const form_case& c : cases)
    for (const grain g : {grain::none, grain::head, grain::token, grain::channel})
      for (const bool normalize : {false, true}) {
        SCOPED_TRACE("t " + std::to_string(c.t) + " K " + std::to_string(c.K) + " V " + std::to_string(c.V) +
                     " chunk " + std::to_string(c.chunk) + " decay " + name(g) + (normalize ? " normalized" : ""));
        const linear_inputs in(1, 2, c.t, c.K, c.V, s.rng, normalize);
        linear_params p;
        p.normalize = normalize;
        p.chunk = c.chunk;
        const linear_decay d = in.decay(g);
        const auto oracle = test::linear_oracle(in.q.cview(), in.k.cview(), in.v.cview(), d,
                                                1.0 / std::sqrt(double(c.K)), normalize, p.eps);
        tensor<float, 4> o({1, 2, c.t, c.V});
        linear_attention_parallel(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), d, p, reference{});
        EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol) << "parallel";
        linear_attention_chunkwise(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), d, {}, p, reference{});
        EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol) << "chunkwise";
        linear_attention_recurrent(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), d, {}, p, reference{});
        EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol) << "recurrent";
      }
}

TEST(LinearAttention, StatesCarryInAndOut) {
  test::seeded_rng s;
  for (const grain g : {grain::none, grain::head, grain::token, grain::channel})
    for (const bool normalize : {false, true}) {
      SCOPED_TRACE(std::string("decay ") + name(g) + (normalize ? " normalized" : ""));
      const std::int64_t b = 1, h = 2, t = 77, K = 24, V = 40;
      const linear_inputs in(b, h, t, K, V, s.rng, normalize);
      const tensor<float, 4> s0 = random_state(b, h, K, V, s.rng);
      tensor<float, 3> z0({b, h, K});
      for (std::int64_t i = 0; i < z0.size(); ++i) z0.data()[i] = float(t) * 0.5f;  // a positive key sum
      linear_params p;
      p.normalize = normalize;
      p.chunk = 16;
      const linear_decay d = in.decay(g);
      const auto oracle = test::linear_oracle(in.q.cview(), in.k.cview(), in.v.cview(), d, 1.0 / std::sqrt(double(K)),
                                              normalize, p.eps, s0.cview(), normalize ? z0.cview() : tensor_view<const float, 3>{});
      for (const bool chunkwise : {true, false}) {
        SCOPED_TRACE(chunkwise ? "chunkwise" : "recurrent");
        tensor<float, 4> st({b, h, K, V}), o({b, h, t, V});
        tensor<float, 3> z({b, h, K});
        std::copy(s0.data(), s0.data() + s0.size(), st.data());
        std::copy(z0.data(), z0.data() + z0.size(), z.data());
        const linear_state state{st.view(), normalize ? z.view() : tensor_view<float, 3>{}};
        if (chunkwise)
          linear_attention_chunkwise(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), d, state, p, reference{});
        else
          linear_attention_recurrent(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), d, state, p, reference{});
        EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol);
        EXPECT_LT(test::relative_l2(st.data(), oracle.s), tol);
        if (normalize) {
          EXPECT_LT(test::relative_l2(z.data(), oracle.z), tol);
        }
      }
    }
}

/// Runs [0, t) as pieces with the state passed along; returns the outputs.
tensor<float, 4> run_in_pieces(const linear_inputs& in, grain g, const std::vector<std::int64_t>& cuts, bool decode_tail,
                               const linear_params& p) {
  tensor<float, 4> o({in.b, in.h, in.t, in.V}), st({in.b, in.h, in.K, in.V});
  tensor<float, 3> z({in.b, in.h, in.K});
  std::fill(st.data(), st.data() + st.size(), 0.0f);
  std::fill(z.data(), z.data() + z.size(), 0.0f);
  const linear_state state{st.view(), p.normalize ? z.view() : tensor_view<float, 3>{}};
  for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
    const std::int64_t t0 = cuts[c], t1 = cuts[c + 1];
    linear_decay d = in.decay(g);
    if (g == grain::token) d.per_token = d.per_token.slice(2, t0, t1);
    if (g == grain::channel) d.per_channel = d.per_channel.slice(2, t0, t1);
    const auto piece = [&](const tensor<float, 4>& x) { return x.cview().slice(2, t0, t1); };
    if (decode_tail && c > 0)
      for (std::int64_t t = t0; t < t1; ++t) {  // one decode step per token
        linear_decay dt = in.decay(g);
        if (g == grain::token) dt.per_token = dt.per_token.slice(2, t, t + 1);
        if (g == grain::channel) dt.per_channel = dt.per_channel.slice(2, t, t + 1);
        const auto one = [&](const tensor<float, 4>& x) { return x.cview().slice(2, t, t + 1); };
        linear_attention(one(in.q), one(in.k), one(in.v), o.view().slice(2, t, t + 1), dt, state, p, reference{});
      }
    else
      linear_attention(piece(in.q), piece(in.k), piece(in.v), o.view().slice(2, t0, t1), d, state, p, reference{});
  }
  return o;
}

TEST(LinearAttention, PrefillPlusDecodeStepsEqualsOnePrefill) {
  test::seeded_rng s;
  for (const grain g : {grain::none, grain::head, grain::token, grain::channel})
    for (const bool normalize : {false, true}) {
      SCOPED_TRACE(std::string("decay ") + name(g) + (normalize ? " normalized" : ""));
      const linear_inputs in(2, 2, 90, 20, 12, s.rng, normalize);
      linear_params p;
      p.normalize = normalize;
      p.chunk = 32;
      const tensor<float, 4> whole = run_in_pieces(in, g, {0, 90}, false, p);
      const tensor<float, 4> decoded = run_in_pieces(in, g, {0, 70, 90}, true, p);    // prefill 70, 20 decode steps
      const tensor<float, 4> split = run_in_pieces(in, g, {0, 13, 45, 90}, false, p);  // chunked prefill, off the chunk grid
      std::vector<double> want(whole.data(), whole.data() + whole.size());
      EXPECT_LT(test::relative_l2(decoded.data(), want), tol);
      EXPECT_LT(test::relative_l2(split.data(), want), tol);
    }
}

TEST(LinearAttention, CausalFutureTokensLeaveEarlierOutputsAlone) {
  test::seeded_rng s;
  linear_inputs in(1, 2, 50, 16, 16, s.rng);
  linear_params p;
  p.chunk = 16;
  const linear_decay d = in.decay(grain::channel);
  tensor<float, 4> before({1, 2, 50, 16}), after({1, 2, 50, 16});
  linear_attention_chunkwise(in.q.cview(), in.k.cview(), in.v.cview(), before.view(), d, {}, p, reference{});
  const std::int64_t changed = 37;
  for (std::int64_t x = 0; x < 16; ++x) {
    in.k(0, 1, changed, x) += 1.0f;
    in.v(0, 1, changed, x) -= 2.0f;
    in.q(0, 1, changed, x) *= -1.0f;
  }
  linear_attention_chunkwise(in.q.cview(), in.k.cview(), in.v.cview(), after.view(), d, {}, p, reference{});
  for (std::int64_t h = 0; h < 2; ++h)
    for (std::int64_t t = 0; t < 50; ++t) {
      bool same = true;
      for (std::int64_t y = 0; y < 16; ++y) same &= before(0, h, t, y) == after(0, h, t, y);
      EXPECT_EQ(same, h == 0 || t < changed) << "head " << h << " token " << t;
    }
}

TEST(LinearAttention, ResetGateSplitsTheSequence) {
  test::seeded_rng s;
  linear_inputs in(1, 1, 40, 8, 8, s.rng);
  const std::int64_t cut = 23;  // g = -inf when token `cut` arrives: the state before it is gone
  in.g_token(0, 0, cut) = -std::numeric_limits<float>::infinity();
  linear_params p;
  p.chunk = 16;
  tensor<float, 4> whole({1, 1, 40, 8}), tail({1, 1, 40 - cut, 8});
  linear_attention_chunkwise(in.q.cview(), in.k.cview(), in.v.cview(), whole.view(), in.decay(grain::token), {}, p,
                             reference{});
  linear_decay d = in.decay(grain::token);
  d.per_token = d.per_token.slice(2, cut + 1, 40);
  const auto part = [&](const tensor<float, 4>& x) { return x.cview().slice(2, cut, 40); };
  tensor<float, 3> g_tail({1, 1, 40 - cut});
  g_tail(0, 0, 0) = 0.0f;  // a fresh start: nothing to forget
  for (std::int64_t t = 1; t < 40 - cut; ++t) g_tail(0, 0, t) = in.g_token(0, 0, cut + t);
  d.per_token = g_tail.cview();
  linear_attention_chunkwise(part(in.q), part(in.k), part(in.v), tail.view(), d, {}, p, reference{});
  std::vector<double> want(tail.data(), tail.data() + tail.size());
  EXPECT_LT(test::relative_l2(&whole(0, 0, cut, 0), want), tol);
  for (std::int64_t i = 0; i < whole.size(); ++i) EXPECT_TRUE(std::isfinite(whole.data()[i]));
}

TEST(LinearAttention, GateStrengthsFromNearZeroToNearOneStayFinite) {
  test::seeded_rng s;
  for (const float tau : {0.1f, 1.0f, 10.0f}) {  // logsigmoid / tau: strong forgetting to almost none
    SCOPED_TRACE("tau " + std::to_string(tau));
    linear_inputs in(1, 2, 100, 32, 16, s.rng);
    std::normal_distribution<float> n(0.0f, 3.0f);
    for (std::int64_t i = 0; i < in.g_channel.size(); ++i) in.g_channel.data()[i] = n(s.rng);
    gla_log_gates(in.g_channel.view(), tau);
    linear_params p;
    p.chunk = 64;
    tensor<float, 4> o({1, 2, 100, 16});
    gla_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), in.g_channel.cview(), {}, p, reference{});
    const auto oracle = test::linear_oracle(in.q.cview(), in.k.cview(), in.v.cview(), in.decay(grain::channel),
                                            1.0 / std::sqrt(32.0), false, 0.0);
    EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol);
  }
}

TEST(LinearAttention, GlaWithZeroOrSharedGatesReducesToSimplerDecays) {
  test::seeded_rng s;
  linear_inputs in(1, 2, 45, 12, 10, s.rng);
  linear_params p;
  p.chunk = 16;
  tensor<float, 4> gla({1, 2, 45, 10}), other({1, 2, 45, 10});
  std::fill(in.g_channel.data(), in.g_channel.data() + in.g_channel.size(), 0.0f);  // g = 0: plain linear attention
  gla_attention(in.q.cview(), in.k.cview(), in.v.cview(), gla.view(), in.g_channel.cview(), {}, p, reference{});
  linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), other.view(), linear_decay{}, {}, p, reference{});
  EXPECT_TRUE(std::equal(gla.data(), gla.data() + gla.size(), other.data()));
  for (std::int64_t h = 0; h < 2; ++h)  // the same gate on every channel: a per-token (simple GLA) decay
    for (std::int64_t t = 0; t < 45; ++t)
      for (std::int64_t x = 0; x < 12; ++x) in.g_channel(0, h, t, x) = in.g_token(0, h, t);
  gla_attention(in.q.cview(), in.k.cview(), in.v.cview(), gla.view(), in.g_channel.cview(), {}, p, reference{});
  linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), other.view(), in.decay(grain::token), {}, p, reference{});
  EXPECT_TRUE(std::equal(gla.data(), gla.data() + gla.size(), other.data()));
}

TEST(LightningAttention, LambdaOneIsPlainCausalLinearAttention) {
  test::seeded_rng s;
  const linear_inputs in(1, 3, 70, 16, 24, s.rng);
  const std::vector<float> log_lambda(3, 0.0f);
  tensor<float, 4> o({1, 3, 70, 24});
  lightning_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(),
                      tensor_view<const float, 1>(log_lambda.data(), {3}), {}, linear_params{}, reference{});
  std::vector<double> want(static_cast<std::size_t>(o.size()), 0.0);  // o_t = Σ_{s<=t} (q_t·k_s) v_s, unscaled
  for (std::int64_t h = 0; h < 3; ++h)
    for (std::int64_t t = 0; t < 70; ++t)
      for (std::int64_t j = 0; j <= t; ++j) {
        double a = 0;
        for (std::int64_t x = 0; x < 16; ++x) a += double(in.q(0, h, t, x)) * in.k(0, h, j, x);
        for (std::int64_t y = 0; y < 24; ++y) want[static_cast<std::size_t>((h * 70 + t) * 24 + y)] += a * in.v(0, h, j, y);
      }
  EXPECT_LT(test::relative_l2(o.data(), want), tol);
}

TEST(LightningAttention, DecayRulesReproduceTheirSources) {
  const std::vector<float> fla = lightning_log_decay_fla(8, 0, 4);  // layer 0: lambda_h = e^-h
  for (std::int64_t h = 0; h < 8; ++h) EXPECT_FLOAT_EQ(std::exp(fla[h]), std::exp(-double(h))) << h;
  EXPECT_NEAR(std::exp(fla[1]), 0.37, 0.005);
  EXPECT_NEAR(std::exp(fla[7]), 9e-4, 5e-5);
  const std::vector<float> fla_late = lightning_log_decay_fla(8, 2, 4);  // (1 - l/L) halves the rate
  for (std::int64_t h = 0; h < 8; ++h) EXPECT_FLOAT_EQ(fla_late[h], -0.5f * float(h));

  const std::vector<float> alibi = lightning_log_decay_alibi(8, 0, 4);  // slopes 2^-1 .. 2^-8
  for (std::int64_t h = 0; h < 8; ++h) EXPECT_FLOAT_EQ(alibi[h], float(-std::pow(2.0, -(h + 1.0)) * (1 + 1e-5))) << h;
  EXPECT_NEAR(std::exp(alibi[0]), 0.61, 0.005);
  EXPECT_NEAR(std::exp(alibi[7]), 0.996, 0.0005);
  const std::vector<float> last = lightning_log_decay_alibi(8, 3, 4);  // the last layer barely decays
  EXPECT_FLOAT_EQ(last[0], float(-0.5 * 1e-5));
  // Six heads: the 4-head slopes, then every other slope of the 8-head list.
  const std::vector<double> six = alibi_slopes(6), want{0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125};
  for (std::size_t h = 0; h < 6; ++h) EXPECT_DOUBLE_EQ(six[h], want[h]) << h;

  const std::vector<float> retnet = retnet_log_decay(4);  // gamma_h = 1 - 2^(-5-h)
  for (std::int64_t h = 0; h < 4; ++h) EXPECT_FLOAT_EQ(std::exp(retnet[h]), float(1.0 - std::pow(2.0, -5.0 - h)));
}

TEST(LinearAttention, HalfPrecisionInputs) {
  test::seeded_rng s;
  const linear_inputs in(1, 2, 66, 32, 32, s.rng);
  const tensor<half, 4> q = test::rounded<half>(in.q), k = test::rounded<half>(in.k);
  const tensor<bfloat16, 4> v = test::rounded<bfloat16>(in.v);
  const linear_decay d = in.decay(grain::channel);
  const auto oracle = test::linear_oracle(q.cview(), k.cview(), v.cview(), d, 1.0 / std::sqrt(32.0), false, 0.0);
  tensor<float, 4> o({1, 2, 66, 32});
  tensor<half, 4> o16({1, 2, 66, 32});
  linear_params p;
  p.chunk = 16;
  linear_attention(q.cview(), k.cview(), v.cview(), o.view(), d, {}, p, reference{});
  EXPECT_LT(test::relative_l2(o.data(), oracle.o), tol);  // same rounded inputs: fp32 accuracy
  linear_attention(q.cview(), k.cview(), v.cview(), o16.view(), d, {}, p, reference{});
  EXPECT_LT(test::relative_l2(o16.data(), oracle.o), 2e-3);
}

TEST(LinearAttention, BadCallsFailBeforeWriting) {
  test::seeded_rng s;
  linear_inputs in(1, 2, 10, 8, 4, s.rng);
  tensor<float, 4> o({1, 2, 10, 4}), st({1, 2, 8, 4});
  tensor<float, 3> z({1, 2, 8});
  std::fill(o.data(), o.data() + o.size(), 7.0f);
  const linear_params p;
  const auto run = [&](const linear_decay& d, const linear_state& state, const linear_params& params) {
    return [&, d, state, params] {
      linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), d, state, params, reference{});
    };
  };
  in.g_token(0, 1, 4) = 0.5f;
  test::expect_error(run(in.decay(grain::token), {}, p),
                     "attnkit: linear_attention: decay.per_token entries must be log decays <= 0 (or -inf), got 0.5");
  in.g_token(0, 1, 4) = std::nanf("");
  test::expect_error(run(in.decay(grain::token), {}, p),
                     "attnkit: linear_attention: decay.per_token entries must be log decays <= 0 (or -inf), got nan");
  linear_decay two = in.decay(grain::head);
  two.per_channel = in.g_channel.cview();
  test::expect_error(run(two, {}, p),
                     "attnkit: linear_attention: give at most one of decay.per_head, decay.per_token, decay.per_channel");
  linear_params normalized;
  normalized.normalize = true;
  test::expect_error(run({}, {st.view(), {}}, normalized),
                     "attnkit: linear_attention: normalize with a state needs state.z (b, h, K)");
  test::expect_error(run({}, {st.view(), z.view()}, p),
                     "attnkit: linear_attention: state.z is only used with normalize and state.s");
  tensor<float, 4> wrong({1, 2, 4, 8});
  test::expect_error(run({}, {wrong.view(), {}}, p),
                     "attnkit: linear_attention: state.s.extent(2) (K) must equal q and v's = 8, got 4");
  linear_params zero_chunk;
  zero_chunk.chunk = 0;
  test::expect_error(run({}, {}, zero_chunk), "attnkit: linear_attention: params.chunk must be >= 1, got 0");
  for (std::int64_t i = 0; i < o.size(); ++i) ASSERT_EQ(o.data()[i], 7.0f);
}

}  // namespace
}  // namespace attnkit
