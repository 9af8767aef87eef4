// key_weights against the fp64 oracle's probability matrix, summed over query
// rows (weighted) and, per KV head, over the GQA group: from the decode kernel
// (scores kept in the call), from the prefill path's second pass, from
// attention_key_weights on its own, over paged sequences of different lengths,
// and on the reference backend. Bad requests fail before any output is written.
#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "support/attention_case.hpp"
#include "support/cpu_archs.hpp"
#include "support/expect_error.hpp"
#include "support/paged_copy.hpp"

namespace attnkit::test {
namespace {

/// sum over the rows and heads key_weights folds together, from the oracle's probabilities.
std::vector<double> expected_weights(const reference_result& ref, std::int64_t outs, const std::vector<float>& rw) {
  std::vector<double> e(static_cast<std::size_t>(ref.b * outs * ref.skv), 0.0);
  for (std::int64_t b = 0; b < ref.b; ++b)
    for (std::int64_t h = 0; h < ref.hq; ++h)
      for (std::int64_t i = 0; i < ref.sq; ++i)
        for (std::int64_t j = 0; j < ref.skv; ++j)
          e[(b * outs + h * outs / ref.hq) * ref.skv + j] += (rw.empty() ? 1.0 : rw[i]) * ref.prob(b, h, i, j);
  return e;
}

void expect_weights_near(const tensor<float, 3>& got, const std::vector<double>& want, double tol) {
  double worst = 0, scale = 1;
  for (double w : want) scale = std::max(scale, std::abs(w));
  for (std::int64_t x = 0; x < got.size(); ++x) keep_worst(worst, std::abs(got.data()[x] - want[x]));
  EXPECT_LE(worst, tol * scale) << "max |key weight - oracle|, largest weight " << scale;
}

/// Random row weights with some zeros (rows that must not count), or none.
std::vector<float> random_row_weights(std::int64_t sq, bool weighted, std::mt19937_64& rng) {
  if (!weighted) return {};
  std::vector<float> w(static_cast<std::size_t>(sq));
  std::uniform_real_distribution<float> u(-0.5f, 2.0f);
  for (auto& x : w) x = u(rng) < 0.0f ? 0.0f : u(rng);
  return w;
}

key_weights request(tensor<float, 3>& out, const std::vector<float>& rw) {
  key_weights kw{out.view(), {}};
  if (!rw.empty()) kw.row_weights = tensor_view<const float, 1>(rw.data(), {static_cast<std::int64_t>(rw.size())});
  return kw;
}

// (arch, sq, skv, mask, per KV head, weighted rows)
using kw_param = std::tuple<cpu_arch, std::int64_t, std::int64_t, mask_case, bool, bool>;
class KeyWeightsCpu : public ::testing::TestWithParam<kw_param> {};

TEST_P(KeyWeightsCpu, MatchOracleProbabilitySums) {
  const auto [a, sq, skv, m, per_kv_head, weighted] = GetParam();
  with_cpu_arch(a, [&, sq = sq, skv = skv, m = m, per_kv_head = per_kv_head, weighted = weighted](auto arch) {
    seeded_rng seeded;
    const problem pr{1, 8, 2, sq, skv, 32, 32};  // b, hq, hkv, sq, skv, d, dv; sq <= 2 decodes, more prefills
    attention_case<float, half, half, float> c(pr, seeded.rng);
    std::vector<float> slopes, sinks;
    const attention_params params = make_params(m, pr, slopes, sinks, seeded.rng);
    const std::vector<float> rw = random_row_weights(sq, weighted, seeded.rng);
    const std::int64_t outs = per_kv_head ? pr.hkv : pr.hq;
    tensor<float, 3> out({pr.b, outs, skv}, std::nanf(""));
    flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), request(out, rw),
                    cpu<decltype(arch)>{two_threads()});
    const reference_result ref = c.oracle(params);
    c.expect_matches(ref, tolerance_for<float, half, half, float>(), false);
    expect_weights_near(out, expected_weights(ref, outs, rw), 1e-5);
  });
}

std::string kw_name(const ::testing::TestParamInfo<kw_param>& info) {
  const auto& [a, sq, skv, m, per_kv_head, weighted] = info.param;
  return std::string(cpu_arch_name(a)) + "_sq" + std::to_string(sq) + "_skv" + std::to_string(skv) + "_" +
         mask_case_name(m) + (per_kv_head ? "_per_kv_head" : "_per_q_head") + (weighted ? "_weighted" : "");
}

INSTANTIATE_TEST_SUITE_P(Sweep, KeyWeightsCpu,
                         ::testing::Combine(::testing::ValuesIn(compiled_cpu_archs()), ::testing::Values(1, 2, 7, 130),
                                            ::testing::Values(1, 31, 300, 777),
                                            ::testing::Values(mask_case::none, mask_case::causal,
                                                              mask_case::sinks_window, mask_case::everything),
                                            ::testing::Bool(), ::testing::Bool()),
                         kw_name);

TEST(KeyWeights, WithoutLseAndFromASecondCallAgree) {
  seeded_rng seeded;
  for (std::int64_t sq : {1, 100}) {
    const problem pr{2, 4, 4, sq, 500, 64, 64};
    attention_case<float, float, float, float> c(pr, seeded.rng);
    attention_params params;
    params.causal = true;
    const cpu<xsimd::default_arch> backend{two_threads()};
    tensor<float, 3> fused({pr.b, pr.hq, pr.skv}), second({pr.b, pr.hq, pr.skv}), ref_out({pr.b, pr.hq, pr.skv});
    flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, {}, request(fused, {}), backend);
    flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), backend);
    attention_key_weights(c.q.cview(), c.k.cview(), params, c.lse.cview(), request(second, {}), backend);
    attention_key_weights(c.q.cview(), c.k.cview(), params, c.lse.cview(), request(ref_out, {}), reference{});
    const std::vector<double> want = expected_weights(c.oracle(params), pr.hq, {});
    expect_weights_near(fused, want, 1e-5);
    expect_weights_near(second, want, 1e-5);
    expect_weights_near(ref_out, want, 1e-5);
  }
}

TEST(KeyWeights, ReferenceBackendMatchesOracle) {
  seeded_rng seeded;
  for (mask_case m : {mask_case::causal, mask_case::everything}) {
    const problem pr{1, 6, 2, 9, 40, 16, 16};
    attention_case<float, float, float, float> c(pr, seeded.rng);
    std::vector<float> slopes, sinks;
    const attention_params params = make_params(m, pr, slopes, sinks, seeded.rng);
    const std::vector<float> rw = random_row_weights(pr.sq, true, seeded.rng);
    tensor<float, 3> out({pr.b, pr.hkv, pr.skv});
    flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, {}, request(out, rw), reference{});
    expect_weights_near(out, expected_weights(c.oracle(params), pr.hkv, rw), 1e-5);
  }
}

TEST(KeyWeights, PagedSequencesOfDifferentLengths) {
  seeded_rng seeded;
  for (std::int64_t sq : {1, 40}) {
    const problem pr{3, 4, 2, sq, 333, 32, 32};
    attention_case<float, float, float, float> c(pr, seeded.rng);
    const std::vector<std::int64_t> lengths = {333, 41, 257};
    const paged_copy<float> pk(c.k.cview(), lengths, 16, seeded.rng);
    const paged_copy<float> pv(c.v.cview(), lengths, 16, seeded.rng);
    attention_params params;
    params.causal = true;
    tensor<float, 3> out({pr.b, pr.hkv, pr.skv}, std::nanf(""));
    flash_attention(c.q.cview(), pk.view, pv.view, c.o.view, params, {}, request(out, {}),
                    cpu<xsimd::default_arch>{two_threads()});
    for (std::int64_t i = 0; i < pr.b; ++i) {
      const auto one = [&](auto t, std::int64_t n) { return t.slice(0, i, i + 1).slice(2, 0, n); };
      const reference_result ref =
          reference_attention(one(c.q.cview(), sq), one(c.k.cview(), lengths[i]), one(c.v.cview(), lengths[i]), params);
      const std::vector<double> want = expected_weights(ref, pr.hkv, {});
      for (std::int64_t w = 0; w < pr.hkv; ++w)
        for (std::int64_t j = 0; j < pr.skv; ++j) {
          const double expect = j < lengths[i] ? want[w * lengths[i] + j] : 0.0;
          ASSERT_NEAR(out(i, w, j), expect, 1e-5) << "sequence " << i << " head " << w << " key " << j;
        }
    }
  }
}

TEST(KeyWeightsErrors, RejectBadRequestsBeforeWriting) {
  tensor<float, 4> q({1, 4, 3, 8}, 0.5f), k({1, 2, 10, 8}, 0.25f), o({1, 4, 3, 8}, -1.0f);
  const auto fails = [&](key_weights kw, const std::string& message) {
    expect_error([&] { flash_attention(q.cview(), k.cview(), k.cview(), o.view(), {}, {}, kw); },
                 "attnkit: flash_attention: " + message);
    for (std::int64_t x = 0; x < o.size(); ++x) ASSERT_EQ(o.data()[x], -1.0f);
  };
  tensor<float, 3> three_heads({1, 3, 10}), short_keys({1, 2, 9}), fine({1, 2, 10});
  fails({three_heads.view(), {}},
        "key_weights.out.extent(1) must equal hq = 4 (per query head) or hkv = 2 (summed over each GQA group), got 3");
  fails({short_keys.view(), {}}, "key_weights.out.extent(2) (skv) must equal the key count = 10, got 9");
  const std::vector<float> two_rows = {1, 1}, nan_row = {1, std::nanf(""), 1};
  fails({fine.view(), tensor_view<const float, 1>(two_rows.data(), {2})},
        "key_weights.row_weights.extent(0) (rows) must equal q.extent(2) = 3, got 2");
  fails({fine.view(), tensor_view<const float, 1>(nan_row.data(), {3})},
        "key_weights.row_weights(1) must be finite, got nan");
}

}  // namespace
}  // namespace attnkit::test
