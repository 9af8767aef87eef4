// cpu_dispatch from a binary built for the baseline x86-64 arch: it picks the
// best arch this CPU has (ctest runs it again capped to AVX-512 and to AVX2, and under
// qemu-x86_64 -cpu Haswell), every dispatched op matches the fp64 oracle there,
// errors raised on the arch side reach the caller as attnkit::error before any
// output is written, and the caller's executor runs the work.
#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/linear/gla.hpp"
#include "attnkit/attention/linear/lightning.hpp"
#include "attnkit/cached_attention.hpp"
#include "attnkit/cpu_dispatch.hpp"
#include "support/attention_case.hpp"
#include "support/cached_case.hpp"
#include "support/expect_error.hpp"
#include "support/linear_inputs.hpp"
#include "support/linear_oracle.hpp"
#include "support/paged_copy.hpp"
#include "support/quantized_kv.hpp"
#include "support/sparse_layout.hpp"

namespace attnkit::test {
namespace {

/// The arch the dispatcher should pick, found without CPUID: ATTNKIT_EXPECT_ARCH
/// (set by the emulated runs), else the kernel's flags in /proc/cpuinfo; capped
/// by ATTNKIT_CPU_ARCH as the dispatcher is.
std::string expected_arch() {
  if (const char* e = std::getenv("ATTNKIT_EXPECT_ARCH")) return e;
  std::ifstream in("/proc/cpuinfo");
  std::string line, flags;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      flags = line + " ";
      break;
    }
  const auto has = [&](const char* f) { return flags.find(" " + std::string(f) + " ") != std::string::npos; };
  const std::string cap = std::getenv("ATTNKIT_CPU_ARCH") ? std::getenv("ATTNKIT_CPU_ARCH") : "";
  if (cap == "avx2") return "avx2";
  if (!(has("avx512f") && has("avx512cd") && has("avx512dq") && has("avx512bw"))) return "avx2";
  return has("avx512_bf16") && cap != "avx512" ? "avx512bf16" : "avx512";
}

TEST(CpuDispatch, PicksTheBestArchThisCpuHas) {
  if (expected_arch() == "none") GTEST_SKIP() << "a CPU below the lowest arch: see the next test";
  EXPECT_EQ(cpu_dispatch_arch(), expected_arch());
}

// Run under qemu-x86_64 -cpu Nehalem (ATTNKIT_EXPECT_ARCH=none): an error that
// names what the CPU lacks, from every dispatched call, and nothing written.
TEST(CpuDispatch, ACpuBelowTheLowestArchGetsTheClearError) {
  if (expected_arch() != "none") GTEST_SKIP() << "this CPU runs the dispatched kernels";
  const std::string lacks = "cpu_dispatch needs a CPU with AVX2, FMA and F16C (the lowest arch this binary is "
                            "built for); this CPU lacks AVX2, FMA, F16C";
  expect_error([] { cpu_dispatch_arch(); }, "attnkit: cpu_dispatch_arch: " + lacks);
  tensor<float, 4> q({1, 2, 3, 8}, 0.5f), o({1, 2, 3, 8}, -1.0f);
  expect_error([&] { flash_attention(q.cview(), q.cview(), q.cview(), o.view(), {}, {}, cpu_dispatch{}); },
               "attnkit: flash_attention: " + lacks);
  expect_error([&] { linear_attention(q.cview(), q.cview(), q.cview(), o.view(), {}, {}, {}, cpu_dispatch{}); },
               "attnkit: linear_attention: " + lacks);
  for (std::int64_t i = 0; i < o.size(); ++i) ASSERT_EQ(o.data()[i], -1.0f);
}

TEST(CpuDispatch, FlashMatchesFp64ReferenceForEveryDispatchedType) {
  using dispatched = mix_list<dtype_mix<float, float, float, float, mask_case::everything>,
                              dtype_mix<half, half, half, half, mask_case::causal>,
                              dtype_mix<bfloat16, bfloat16, bfloat16, bfloat16, mask_case::sinks_window>,
                              dtype_mix<float, half, half, float, mask_case::alibi>,
                              dtype_mix<float, bfloat16, bfloat16, float, mask_case::softcap>>;
  for (std::int64_t sq : {1, 100})  // decode and prefill
    for_each_mix(dispatched{}, [&](auto mix) {
      using M = decltype(mix);
      problem pr;
      pr.hq = 8, pr.hkv = 2, pr.sq = sq, pr.skv = 300, pr.d = pr.dv = 80;
      check_against_oracle<typename M::q, typename M::k, typename M::v, typename M::o>(
          pr, M::mask,
          [](auto& c, const attention_params& params) {
            flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), cpu_dispatch{});
          },
          false);
    });
}

/// out(b, h, j) = Σ_i p(b, h, i, j) from the oracle, compared with a kernel's key weights.
void expect_key_weights(const tensor<float, 3>& got, const reference_result& ref, const problem& pr) {
  for (std::int64_t b = 0; b < pr.b; ++b)
    for (std::int64_t h = 0; h < pr.hq; ++h)
      for (std::int64_t j = 0; j < pr.skv; ++j) {
        double want = 0;
        for (std::int64_t i = 0; i < pr.sq; ++i) want += ref.prob(b, h, i, j);
        ASSERT_NEAR(got(b, h, j), want, 1e-5 * std::max(1.0, want)) << b << " " << h << " " << j;
      }
}

TEST(CpuDispatch, PagedFlashAndKeyWeightsMatchFp64Reference) {
  seeded_rng seeded;
  for (std::int64_t sq : {1, 37}) {
    problem pr;
    pr.b = 2, pr.hq = 4, pr.hkv = 2, pr.sq = sq, pr.skv = 133, pr.d = pr.dv = 64;
    attention_case<float, half, half, float> c(pr, seeded.rng);
    attention_params params;
    params.causal = true;
    const reference_result ref = c.oracle(params);
    const paged_copy<half> kp(c.k.cview(), {pr.skv, pr.skv}, 16, seeded.rng), vp(c.v.cview(), {pr.skv, pr.skv}, 16,
                                                                                  seeded.rng);
    tensor<float, 3> kw({pr.b, pr.hq, pr.skv}, std::nanf(""));
    flash_attention(c.q.cview(), kp.view, vp.view, c.o.view, params, c.lse.view(), key_weights{kw.view(), {}},
                    cpu_dispatch{two_threads()});
    c.expect_matches(ref, tolerance_for<float, half, half, float>(), false);
    expect_key_weights(kw, ref, pr);

    tensor<float, 3> alone({pr.b, pr.hq, pr.skv}, std::nanf(""));
    attention_key_weights(c.q.cview(), c.k.cview(), params, c.lse.cview(), key_weights{alone.view(), {}},
                          cpu_dispatch{});
    expect_key_weights(alone, ref, pr);
  }
}

TEST(CpuDispatch, QuantizedKvMatchesFp64ReferenceOverItsValues) {
  seeded_rng seeded;
  const auto run = [&](auto tag, std::int64_t sq) {
    using T = decltype(tag);
    const std::int64_t b = 2, hq = 4, hkv = 2, skv = 300, d = 64;
    const quantized_kv<T> k(b, hkv, skv, d, seeded.rng), v(b, hkv, skv, d, seeded.rng);
    tensor<float, 4> q({b, hq, sq, d}), o({b, hq, sq, d}, std::nanf(""));
    fill_normal(q.data(), q.size(), seeded.rng);
    auto a = make_attention_args(q.cview(), k.data.cview(), v.data.cview(), o.view());
    a.k.scales = k.scales();
    a.v.scales = v.scales();
    a.params.causal = true;
    flash_attention(a, cpu_dispatch{two_threads()});
    const error_stats e =
        compare_output(o.cview(), reference_attention(q.cview(), k.values.cview(), v.values.cview(), a.params));
    EXPECT_TRUE(e.within(1e-5)) << dtype_name<T>() << " sq " << sq << " rel_l2 " << e.rel_l2;
  };
  for (std::int64_t sq : {1, 37}) {
    run(std::int8_t{}, sq);
    run(fp8_e4m3{}, sq);
    run(fp8_e5m2{}, sq);
  }
}

TEST(CpuDispatch, BlockSparseLayoutsMatchFp64ReferenceOverTheirKeys) {
  seeded_rng seeded;
  for (const std::int64_t sq : {1, 130}) {  // decode and prefill
    const std::int64_t b = 2, hq = 8, hkv = 2, skv = 700, d = 64;
    tensor<float, 4> q({b, hq, sq, d}), k({b, hkv, skv, d}), v({b, hkv, skv, d}), o({b, hq, sq, d}, std::nanf(""));
    for (auto* t : {&q, &k, &v}) fill_normal(t->data(), t->size(), seeded.rng);
    layout_lists l = random_layout({sq, sq}, {skv, skv}, hq, 16, 32, 0.3, seeded.rng);
    l.sinks = 2;
    l.window = 40;
    auto a = make_attention_args(q.cview(), k.cview(), v.cview(), o.view());
    a.params.causal = true;
    a.sparse = l.view();
    flash_attention(a, cpu_dispatch{two_threads()});
    oracle_options opt;
    opt.allowed = [&](std::int64_t bi, std::int64_t h, std::int64_t i, std::int64_t j) {
      return l.sees(bi, h, i, j, skv - sq + i, j);
    };
    const error_stats e = compare_output(o.cview(), reference_attention(q.cview(), k.cview(), v.cview(), a.params, opt));
    EXPECT_TRUE(e.within(1e-5)) << "sq " << sq << " rel_l2 " << e.rel_l2;
  }
}

TEST(CpuDispatch, CachedAttentionMatchesFp64ReferencePerHead) {
  for (const bool paged : {false, true}) check_cached_attention(paged, cpu_dispatch{two_threads()});
}

TEST(CpuDispatch, LinearFamilyMatchesFp64Recurrence) {
  seeded_rng seeded;
  const std::int64_t b = 2, h = 3, t = 77, K = 32, V = 40;
  const linear_inputs in(b, h, t, K, V, seeded.rng);
  const auto check = [&](const linear_decay& d, const tensor<float, 4>& o, const char* what) {
    const auto want = linear_oracle(in.q.cview(), in.k.cview(), in.v.cview(), d, 1.0 / std::sqrt(double(K)), false,
                                    0.0);
    EXPECT_LT(relative_l2(o.data(), want.o), 1e-5) << what;
  };
  linear_params p;
  p.scale = 1.0f / std::sqrt(float(K));
  p.chunk = 16;
  tensor<float, 4> o({b, h, t, V}, std::nanf(""));
  gla_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), in.g_channel.cview(), {}, p, cpu_dispatch{});
  check(in.decay(grain::channel), o, "gla");
  lightning_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), in.g_head.cview(), {}, p, cpu_dispatch{});
  check(in.decay(grain::head), o, "lightning");
  linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), in.decay(grain::token), {}, p,
                   cpu_dispatch{two_threads()});
  check(in.decay(grain::token), o, "per-token decay");

  // bf16 inputs, f32 output: against the oracle on the rounded inputs.
  const auto qb = rounded<bfloat16>(in.q), kb = rounded<bfloat16>(in.k), vb = rounded<bfloat16>(in.v);
  linear_attention(qb.cview(), kb.cview(), vb.cview(), o.view(), in.decay(grain::channel), {}, p, cpu_dispatch{});
  const auto want = linear_oracle(qb.cview(), kb.cview(), vb.cview(), in.decay(grain::channel),
                                  1.0 / std::sqrt(double(K)), false, 0.0);
  EXPECT_LT(relative_l2(o.data(), want.o), 1e-5) << "bf16 inputs";
}

TEST(CpuDispatch, VarlenMatchesPerSequenceOracle) {
  seeded_rng seeded;
  const std::int64_t h = 2, K = 16, V = 24;
  const std::vector<std::int64_t> cu = {0, 5, 5, 70, 71};
  const std::int64_t total = cu.back(), n = static_cast<std::int64_t>(cu.size()) - 1;
  const linear_inputs in(1, h, total, K, V, seeded.rng);
  tensor<float, 4> o({1, h, total, V}, std::nanf("")), s({n, h, K, V}, 0.0f);
  const tensor_view<const std::int64_t, 1> cu_view(cu.data(), {n + 1}, {1});
  linear_params p;
  p.chunk = 8;
  linear_attention_varlen(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), cu_view, in.decay(grain::token),
                          linear_state{s.view(), {}}, p, cpu_dispatch{two_threads()});
  for (std::int64_t i = 0; i < n; ++i) {
    if (cu[i] == cu[i + 1]) continue;
    const auto part = [&](const tensor<float, 4>& x) { return x.cview().slice(2, cu[i], cu[i + 1]); };
    linear_decay d;
    d.per_token = in.g_token.cview().slice(2, cu[i], cu[i + 1]);
    const auto want = linear_oracle(part(in.q), part(in.k), part(in.v), d, 1.0 / std::sqrt(double(K)), false, 0.0);
    std::vector<float> got;
    for (std::int64_t j = 0; j < h; ++j)
      for (std::int64_t r = cu[i]; r < cu[i + 1]; ++r)
        for (std::int64_t y = 0; y < V; ++y) got.push_back(o(0, j, r, y));
    EXPECT_LT(relative_l2(got.data(), want.o), 1e-5) << "sequence " << i;
    EXPECT_LT(relative_l2(&s(i, 0, 0, 0), want.s), 1e-5) << "state of sequence " << i;
  }
}

TEST(CpuDispatch, BasedMatchesItsFormulaInFp64) {
  seeded_rng seeded;
  const std::int64_t t = 70, d = 16, V = 33;
  linear_inputs in(1, 2, t, d, V, seeded.rng);
  tensor<float, 4> o({1, 2, t, V}, std::nanf(""));
  based_params p;
  p.chunk = 32;
  based_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), {}, p, cpu_dispatch{});
  std::vector<double> want;  // Σ_{s<=t} p(s) v_s / (Σ p + eps), p(s) = 1 + s + s²/2, s = q·k/sqrt(d)
  for (std::int64_t hh = 0; hh < 2; ++hh)
    for (std::int64_t r = 0; r < t; ++r) {
      std::vector<double> num(V, 0.0);
      double den = 0;
      for (std::int64_t j = 0; j <= r; ++j) {
        double dot = 0;
        for (std::int64_t x = 0; x < d; ++x) dot += double(in.q(0, hh, r, x)) * in.k(0, hh, j, x);
        const double sc = dot / std::sqrt(double(d)), w = 1 + sc + sc * sc / 2;
        den += w;
        for (std::int64_t y = 0; y < V; ++y) num[y] += w * in.v(0, hh, j, y);
      }
      for (std::int64_t y = 0; y < V; ++y) want.push_back(num[y] / (den + p.eps));
    }
  EXPECT_LT(relative_l2(o.data(), want), 1e-5);
}

TEST(CpuDispatch, WorkspaceQueriesFitTheirCalls) {
  seeded_rng seeded;
  problem pr;
  pr.hq = 4, pr.hkv = 2, pr.sq = 3, pr.skv = 50, pr.d = pr.dv = 8;
  attention_case<float, float, float, float> c(pr, seeded.rng);
  cpu_dispatch backend;
  std::vector<unsigned char> scratch(flash_attention_workspace_size(c.q.cview(), c.k.cview(), c.v.cview(), backend));
  backend.scratch = {scratch.data(), scratch.size()};
  flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, {}, c.lse.view(), backend);
  c.expect_matches(c.oracle({}), tolerance_for<float, float, float, float>(), false);

  backend.scratch.bytes -= 1;
  expect_error([&] { flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, {}, {}, backend); },
               "attnkit: flash_attention: workspace.bytes must be >= " + std::to_string(scratch.size()) +
                   " (the kernel's workspace_size), got " + std::to_string(scratch.size() - 1));

  const linear_inputs in(1, 2, 80, 16, 16, seeded.rng);  // t > params.chunk: the call needs the whole query
  cpu_dispatch lin;
  std::vector<unsigned char> lin_scratch(linear_attention_workspace_size(16, 16, {}, lin));
  lin.scratch = {lin_scratch.data(), lin_scratch.size()};
  tensor<float, 4> o({1, 2, 80, 16});
  linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), {}, {}, {}, lin);
  lin.scratch.bytes -= 1;
  EXPECT_THROW(linear_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), {}, {}, {}, lin), error);
  std::vector<unsigned char> based_scratch(based_attention_workspace_size(16, 16, {}, lin));
  lin.scratch = {based_scratch.data(), based_scratch.size()};
  based_attention(in.q.cview(), in.k.cview(), in.v.cview(), o.view(), {}, {}, lin);
}

TEST(CpuDispatch, ArchSideErrorsReachTheCallerBeforeAnyWrite) {
  tensor<float, 4> q({1, 4, 3, 8}, 0.5f), untouched({1, 4, 3, 8}, -1.0f);
  tensor<float, 4> bad_k({1, 3, 5, 8}, 0.0f);
  expect_error(
      [&] { flash_attention(q.cview(), bad_k.cview(), bad_k.cview(), untouched.view(), {}, {}, cpu_dispatch{}); },
      "attnkit: flash_attention: q.extent(1) (hq) = 4 must be a multiple of k.extent(1) (hkv) = 3");
  // A content check (a page id past the pool) fails on the arch side: still attnkit::error.
  tensor<float, 4> pool({2, 2, 4, 8}, 0.25f);
  const std::vector<std::int32_t> indptr{0, 1}, indices{7}, last{4};
  const paged_kv<const float> kv{pool.cview(), {{indptr.data(), {2}, {1}}, {indices.data(), {1}, {1}},
                                                {last.data(), {1}, {1}}}};
  tensor<float, 4> q1({1, 2, 1, 8}, 0.5f), o1({1, 2, 1, 8}, -1.0f);
  try {
    flash_attention(q1.cview(), kv, kv, o1.view(), {}, {}, cpu_dispatch{});
    ADD_FAILURE() << "a page id past the pool was accepted";
  } catch (const error& e) {
    EXPECT_NE(std::string(e.what()).find("flash_attention"), std::string::npos) << e.what();
  }
  for (std::int64_t i = 0; i < untouched.size(); ++i) ASSERT_EQ(untouched.data()[i], -1.0f);
  for (std::int64_t i = 0; i < o1.size(); ++i) ASSERT_EQ(o1.data()[i], -1.0f);
}

TEST(CpuDispatch, RunsOnTheCallersExecutor) {
  seeded_rng seeded;
  problem pr;
  pr.hq = 8, pr.hkv = 8, pr.sq = 64, pr.skv = 64, pr.d = pr.dv = 32;
  attention_case<float, float, float, float> c(pr, seeded.rng);
  std::atomic<int> loops{0};
  const executor mine = executor::custom(3, [&](std::int64_t n, const std::function<void(std::int64_t)>& task) {
    ++loops;
    for (std::int64_t i = n - 1; i >= 0; --i) task(i);  // any order must do
  });
  flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, {}, c.lse.view(), cpu_dispatch{mine});
  EXPECT_GT(loops.load(), 0);
  c.expect_matches(c.oracle({}), tolerance_for<float, float, float, float>(), false);
}

}  // namespace
}  // namespace attnkit::test
