// flash_attention over int8 and fp8 K/V on the reference backend and this
// binary's cpu<Arch>: every path (prefill, decode with GQA and split keys,
// paged, ragged, key weights) equals the fp64 attention over the values the
// quantized K/V stand for, at the fp32 bound: the kernel adds no error of its
// own. The error of quantization itself against the unquantized inputs is
// measured and reported; bad scales are clear errors before any write.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "support/attention_case.hpp"
#include "support/compare.hpp"
#include "support/cpu_archs.hpp"
#include "support/every_backend.hpp"
#include "support/expect_error.hpp"
#include "support/paged_copy.hpp"
#include "support/quantized_kv.hpp"
#include "support/seeded.hpp"

namespace attnkit::test {
namespace {

/// A random float q (b, hq, sq, d).
tensor<float, 4> random_q(std::int64_t b, std::int64_t hq, std::int64_t sq, std::int64_t d, std::mt19937_64& rng) {
  tensor<float, 4> q({b, hq, sq, d});
  fill_normal(q.data(), q.size(), rng);
  return q;
}

/// One contiguous call with quantized K (TK) and V (TV) against the oracle over their values.
template <class TK, class TV, class Backend>
void expect_contiguous_matches(const problem& pr, mask_case m, bool f16_scales, const Backend& backend,
                               std::mt19937_64& rng) {
  SCOPED_TRACE(std::string("k ") + dtype_name<TK>() + " v " + dtype_name<TV>() + " mask " + mask_case_name(m) +
               " sq " + std::to_string(pr.sq) + " skv " + std::to_string(pr.skv) + " d " + std::to_string(pr.d) +
               (f16_scales ? " f16 scales" : ""));
  const quantized_kv<TK> k(pr.b, pr.hkv, pr.skv, pr.d, rng, f16_scales);
  const quantized_kv<TV> v(pr.b, pr.hkv, pr.skv, pr.dv, rng, f16_scales);
  const tensor<float, 4> q = random_q(pr.b, pr.hq, pr.sq, pr.d, rng);
  std::vector<float> slopes, sinks;
  const attention_params params = make_params(m, pr, slopes, sinks, rng);
  tensor<float, 4> o({pr.b, pr.hq, pr.sq, pr.dv}, std::nanf(""));
  tensor<float, 3> lse({pr.b, pr.hq, pr.sq}, std::nanf(""));
  auto a = make_attention_args(q.cview(), k.data.cview(), v.data.cview(), o.view());
  a.k.scales = k.scales();
  a.v.scales = v.scales();
  a.params = params;
  a.lse = lse.view();
  flash_attention(a, backend);
  const reference_result ref = reference_attention(q.cview(), k.values.cview(), v.values.cview(), params);
  const error_stats e = compare_output(o.cview(), ref);
  EXPECT_TRUE(e.within(1e-5)) << "rel_l2 " << e.rel_l2 << " max_abs " << e.max_abs << " ref_max " << e.ref_max;
  for (std::int64_t b = 0; b < pr.b; ++b)
    for (std::int64_t h = 0; h < pr.hq; ++h)
      for (std::int64_t i = 0; i < pr.sq; ++i)
        EXPECT_NEAR(lse(b, h, i), ref.row_lse(b, h, i), 1e-5 * std::max(1.0, std::abs(ref.row_lse(b, h, i))));
}

TEST(QuantizedKv, EveryTypeEqualsTheOracleOverItsValues) {
  seeded_rng seeded;
  // Prefill (many rows), decode with GQA (one row, keys split into chunks), and
  // awkward head dims: 80 is not a multiple of the AVX-512 lanes, 7 of any.
  // One row per KV head (no GQA) decodes straight from memory (decode_tile_direct);
  // a GQA group's rows read full tiles in place (group_scores_direct), 16 rows
  // of GQA 8 in tiles of 128 keys.
  const problem prefill{2, 4, 2, 37, 77, 80, 64}, decode{2, 8, 2, 1, 1100, 128, 128}, odd{1, 3, 1, 9, 31, 7, 7};
  const problem one_row{2, 2, 2, 1, 1100, 64, 128}, group8{1, 16, 2, 2, 1100, 80, 80};
  on_every_backend([&](auto backend) {
    for (const problem& pr : {prefill, decode, odd, one_row, group8})
      for (mask_case m : {mask_case::none, mask_case::everything}) {
        expect_contiguous_matches<std::int8_t, std::int8_t>(pr, m, false, backend, seeded.rng);
        expect_contiguous_matches<std::int8_t, std::int8_t>(pr, m, true, backend, seeded.rng);
        expect_contiguous_matches<fp8_e4m3, fp8_e4m3>(pr, m, false, backend, seeded.rng);
        expect_contiguous_matches<fp8_e5m2, fp8_e5m2>(pr, m, false, backend, seeded.rng);
        expect_contiguous_matches<std::int8_t, fp8_e4m3>(pr, m, false, backend, seeded.rng);
      }
  });
}

/// A ragged batch over paged quantized K/V, decode rows and prefill chunks mixed,
/// with key weights per KV head: each sequence against the oracle on its own.
template <class T, class Backend>
void expect_paged_ragged_matches(const Backend& backend, std::int64_t hq, std::mt19937_64& rng) {
  SCOPED_TRACE(std::string("kv ") + dtype_name<T>() + " hq " + std::to_string(hq));
  const std::int64_t hkv = 2, d = 64, group = hq / hkv;
  const std::vector<std::int64_t> lengths = {0, 45, 700, 33}, rows = {0, 1, 40, 2};
  const std::int64_t b = 4, longest = 700;
  const quantized_kv<T> k(b, hkv, longest, d, rng), v(b, hkv, longest, d, rng);
  const quantized_pages<T> kp(k, lengths, 16, rng), vp(v, lengths, 16, rng);
  std::vector<std::int64_t> cu = {0};
  for (std::int64_t r : rows) cu.push_back(cu.back() + r);
  const tensor<float, 4> q = random_q(1, hq, cu.back(), d, rng);
  tensor<float, 4> o({1, hq, cu.back(), d}, std::nanf(""));
  tensor<float, 3> lse({1, hq, cu.back()}, std::nanf(""));
  tensor<float, 3> weights({b, hkv, longest}, std::nanf(""));
  auto a = make_attention_args(q.cview(), kp.view, vp.view, o.view());
  a.k.scales = kp.scales;
  a.v.scales = vp.scales;
  a.cu_seqlens_q = tensor_view<const std::int64_t, 1>(cu.data(), {b + 1});
  a.params.causal = true;
  a.lse = lse.view();
  a.kw.out = weights.view();
  flash_attention(a, backend);
  for (std::int64_t s = 0; s < b; ++s) {
    SCOPED_TRACE("sequence " + std::to_string(s));
    const std::int64_t n = rows[s], len = lengths[s];
    const auto keys = [&](const tensor<float, 4>& t) {  // (1, hkv, len, d) of sequence s
      return tensor_view<const float, 4>(&t(s, 0, 0, 0), {1, hkv, len, d}, t.cview().strides());
    };
    const tensor_view<const float, 4> qs(q.data() + cu[s] * d, {1, hq, n, d}, q.cview().strides());
    const reference_result ref = reference_attention(qs, keys(k.values), keys(v.values), a.params);
    const tensor_view<const float, 4> os(o.data() + cu[s] * d, {1, hq, n, d}, o.cview().strides());
    const error_stats e = compare_output(os, ref);
    EXPECT_TRUE(n == 0 || e.within(1e-5)) << "rel_l2 " << e.rel_l2 << " max_abs " << e.max_abs;
    for (std::int64_t hk = 0; hk < hkv; ++hk)
      for (std::int64_t j = 0; j < longest; ++j) {
        double want = 0;  // the probabilities of key j summed over the group's rows
        for (std::int64_t h = hk * group; h < (hk + 1) * group && j < len; ++h)
          for (std::int64_t i = 0; i < n; ++i) want += ref.prob(0, h, i, j);
        EXPECT_NEAR(weights(s, hk, j), want, 1e-5 * std::max(1.0, want)) << "head " << hk << " key " << j;
      }
  }
}

TEST(QuantizedKv, PagedRaggedBatchWithKeyWeights) {
  seeded_rng seeded;
  on_every_backend([&](auto backend) {
    for (std::int64_t hq : {2, 4}) {  // hq 2: the decode rows of one query row each go direct
      expect_paged_ragged_matches<std::int8_t>(backend, hq, seeded.rng);
      expect_paged_ragged_matches<fp8_e4m3>(backend, hq, seeded.rng);
      expect_paged_ragged_matches<fp8_e5m2>(backend, hq, seeded.rng);
    }
  });
}

/// Every fp8 code as a key and a value, NaN codes excepted: the kernels decode
/// each exactly as the format defines it (subnormals and the largest values too).
TEST(QuantizedKv, EveryFp8CodeDecodesExactlyInTheKernels) {
  seeded_rng seeded;
  const auto run = [&](auto tag, const auto& backend) {
    using T = decltype(tag);
    std::vector<std::uint8_t> codes;
    for (int c = 0; c < 256; ++c)
      if (!std::isnan(fp8_value<T>(static_cast<std::uint8_t>(c))) && !std::isinf(fp8_value<T>(static_cast<std::uint8_t>(c))))
        codes.push_back(static_cast<std::uint8_t>(c));
    const std::int64_t d = 16, skv = static_cast<std::int64_t>(codes.size());  // key j holds code j at column j % d
    tensor<T, 4> k({1, 1, skv, d}), v({1, 1, skv, d});
    tensor<float, 4> kf({1, 1, skv, d}), vf({1, 1, skv, d});
    for (std::int64_t j = 0; j < skv; ++j)
      for (std::int64_t x = 0; x < d; ++x) {
        const std::uint8_t c = x == j % d ? codes[j] : codes[(j * 7 + x) % skv] & 0x80;  // zeros elsewhere
        k(0, 0, j, x) = T::from_bits(c);
        // Values take every magnitude with a positive sign: o is then a convex combination, free of the
        // cancellation that would make its relative error meaningless (signs are decoded in the keys).
        const std::uint8_t vc = codes[(j + x * 13) % skv] & 0x7f;
        v(0, 0, j, x) = T::from_bits(vc);
        kf(0, 0, j, x) = static_cast<float>(fp8_value<T>(c));
        vf(0, 0, j, x) = static_cast<float>(fp8_value<T>(vc));
      }
    const float head_scale = std::is_same_v<T, fp8_e4m3> ? 1.0f / 64 : 1.0f / 16384;  // keeps scores moderate
    std::vector<float> heads = {1.0f};
    for (std::int64_t j = 0; j < skv; ++j)
      for (std::int64_t x = 0; x < d; ++x) kf(0, 0, j, x) *= head_scale;
    std::vector<float> kh = {head_scale};
    for (std::int64_t sq : {1, 3}) {  // one row decodes straight from memory, three through fp32 tiles
      const tensor<float, 4> q = random_q(1, 1, sq, d, seeded.rng);
      tensor<float, 4> o({1, 1, sq, d}, std::nanf(""));
      auto a = make_attention_args(q.cview(), k.cview(), v.cview(), o.view());
      a.k.scales.heads = tensor_view<const float, 2>(kh.data(), {1, 1});
      a.v.scales.heads = tensor_view<const float, 2>(heads.data(), {1, 1});
      flash_attention(a, backend);
      const reference_result ref = reference_attention(q.cview(), kf.cview(), vf.cview(), a.params);
      const error_stats e = compare_output(o.cview(), ref);
      EXPECT_TRUE(e.within(1e-5)) << dtype_name<T>() << " sq " << sq << " rel_l2 " << e.rel_l2;
    }
  };
  on_every_backend([&](auto backend) {
    run(fp8_e4m3{}, backend);
    run(fp8_e5m2{}, backend);
  });
}

/// The error quantization itself brings, against attention over the unquantized
/// f32 inputs, reported (not hidden) and bounded: random normal K/V, sq 64, skv 512, d 128.
TEST(QuantizedKv, QuantizationErrorAgainstTheUnquantizedInputsIsReported) {
  seeded_rng seeded;
  const problem pr{1, 4, 2, 64, 512, 128, 128};
  const auto run = [&](auto tag, double bound) {
    using T = decltype(tag);
    tensor<float, 4> kf({1, pr.hkv, pr.skv, pr.d}), vf({1, pr.hkv, pr.skv, pr.dv});
    fill_normal(kf.data(), kf.size(), seeded.rng);
    fill_normal(vf.data(), vf.size(), seeded.rng);
    tensor<T, 4> kq({1, pr.hkv, pr.skv, pr.d}), vq({1, pr.hkv, pr.skv, pr.dv});
    tensor<float, 3> ks({1, pr.hkv, pr.skv}), vs({1, pr.hkv, pr.skv});
    std::vector<float> heads(pr.hkv, std::is_same_v<T, fp8_e5m2> ? 1.0f : 1.0f / 64);
    kv_scales ksc, vsc;
    if constexpr (std::is_same_v<T, std::int8_t>) {
      quantize_int8(kf.cview(), kq.view(), ks.view());
      quantize_int8(vf.cview(), vq.view(), vs.view());
      ksc.rows = ks.cview();
      vsc.rows = vs.cview();
    } else {
      const tensor_view<const float, 2> hv(heads.data(), {1, pr.hkv});
      quantize_fp8(kf.cview(), kq.view(), hv);
      quantize_fp8(vf.cview(), vq.view(), hv);
      ksc.heads = vsc.heads = hv;
    }
    const tensor<float, 4> q = random_q(1, pr.hq, pr.sq, pr.d, seeded.rng);
    tensor<float, 4> o({1, pr.hq, pr.sq, pr.dv});
    auto a = make_attention_args(q.cview(), kq.cview(), vq.cview(), o.view());
    a.k.scales = ksc;
    a.v.scales = vsc;
    a.params.causal = true;
    flash_attention(a, reference{});
    const error_stats e = compare_output(o.cview(), reference_attention(q.cview(), kf.cview(), vf.cview(), a.params));
    RecordProperty(std::string("rel_l2_") + dtype_name<T>(), std::to_string(e.rel_l2));
    std::printf("quantization error vs f32 K/V (%s): rel_l2 %.3g, max_abs %.3g of max %.3g\n", dtype_name<T>(),
                e.rel_l2, e.max_abs, e.ref_max);
    EXPECT_TRUE(e.finite);
    EXPECT_LT(e.rel_l2, bound) << dtype_name<T>();
    EXPECT_GT(e.rel_l2, 0.0) << dtype_name<T>() << ": quantization must lose something";
  };
  run(std::int8_t{}, 1.5e-2);  // 8 bits per value, a scale per row (measured 0.009)
  run(fp8_e4m3{}, 8e-2);     // 3 mantissa bits (measured 0.038)
  run(fp8_e5m2{}, 1.5e-1);   // 2 mantissa bits (measured 0.075)
}

TEST(QuantizedKv, BadScalesAreClearErrorsBeforeAnyWrite) {
  seeded_rng seeded;
  quantized_kv<std::int8_t> k(1, 1, 20, 16, seeded.rng);
  const quantized_kv<std::int8_t> v(1, 1, 20, 16, seeded.rng);
  quantized_kv<fp8_e4m3> k8(1, 1, 20, 16, seeded.rng);
  const tensor<float, 4> q = random_q(1, 2, 3, 16, seeded.rng);
  tensor<float, 4> o({1, 2, 3, 16}, 7.0f);
  const auto call = [&](auto k_data, const kv_scales& ks, const kv_scales& vs) {
    return [&, k_data, ks, vs] {
      auto a = make_attention_args(q.cview(), k_data, v.data.cview(), o.view());
      a.k.scales = ks;
      a.v.scales = vs;
      flash_attention(a, reference{});
    };
  };
  const std::string fn = "attnkit: flash_attention: ";
  for (const float bad : {0.0f, -1.0f, std::nanf(""), std::numeric_limits<float>::infinity()}) {
    const float saved = k.rows(0, 0, 11);
    k.rows(0, 0, 11) = bad;
    std::ostringstream got;
    got << bad;
    expect_error(call(k.data.cview(), k.scales(), v.scales()),
                 fn + "k.scales.rows(0, 0, 11) must be finite and > 0 (a scale multiplies every value of its row), got " +
                     got.str());
    k.rows(0, 0, 11) = saved;
    k8.heads(0, 0) = bad;
    expect_error(call(k8.data.cview(), k8.scales(), v.scales()),
                 fn + "k.scales.heads(0, 0) must be finite and > 0 (a scale multiplies every value of its head), got " +
                     got.str());
  }
  expect_error(call(k.data.cview(), kv_scales{}, v.scales()),
               fn + "int8 k needs its row scales in exactly one of k.scales.rows (fp32) and k.scales.rows_f16, got "
                    "neither");
  kv_scales wrong = k.scales();
  wrong.rows = tensor_view<const float, 3>(k.rows.data(), {1, 1, 19});
  expect_error(call(k.data.cview(), wrong, v.scales()),
               fn + "k.scales.rows must be (b, hkv, skv) = (1, 1, 20), but extent(2) is 19");
  expect_error(call(k8.data.cview(), k.scales(), v.scales()),
               fn + "k.scales.rows is for int8; e4m3 k takes one scale per (sequence, KV head) in k.scales.heads");
  // A float K with scales.
  tensor<float, 4> kf({1, 1, 20, 16}, 1.0f);
  expect_error(
      [&] {
        auto a = make_attention_args(q.cview(), kf.cview(), v.data.cview(), o.view());
        a.k.scales = k.scales();
        a.v.scales = v.scales();
        flash_attention(a, reference{});
      },
      fn + "k.scales are given but k holds f32, which takes none (only int8 and fp8 K/V are scaled)");
  for (std::int64_t i = 0; i < o.size(); ++i) ASSERT_EQ(o.data()[i], 7.0f) << "an error wrote o";
  for (cpu_arch arch : compiled_cpu_archs())  // the cpu backend runs the same checks
    with_cpu_arch(arch, [&](auto x) {
      auto a = make_attention_args(q.cview(), k8.data.cview(), v.data.cview(), o.view());
      a.v.scales = v.scales();
      expect_error([&] { flash_attention(a, cpu<decltype(x)>{}); },
                   fn + "e4m3 k needs k.scales.heads (b, hkv) = (1, 1)");
    });
}

}  // namespace
}  // namespace attnkit::test
