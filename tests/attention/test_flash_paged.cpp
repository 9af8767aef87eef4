// flash_attention over a paged KV cache: bit for bit the contiguous result for
// page sizes 1, 16 and 256 (pages scattered in a shuffled pool), sequences of
// different lengths against the fp64 oracle, determinism, the workspace
// contract, and bad tables rejected before any output is written.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "support/attention_case.hpp"
#include "support/expect_error.hpp"
#include "support/paged_copy.hpp"

namespace attnkit::test {
namespace {

using arch = xsimd::default_arch;

template <class T>
bool same_bits(const tensor_view<T, 4>& a, const tensor_view<T, 4>& b) {
  for (std::int64_t i = 0; i < a.extent(0); ++i)
    for (std::int64_t h = 0; h < a.extent(1); ++h)
      for (std::int64_t s = 0; s < a.extent(2); ++s)
        if (std::memcmp(&a(i, h, s, 0), &b(i, h, s, 0), sizeof(T) * a.extent(3)) != 0) return false;
  return true;
}

class FlashPaged : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(FlashPaged, BitIdenticalToContiguous) {
  const std::int64_t page_size = GetParam();
  for (std::int64_t sq : {1, 127})
    for (mask_case m : {mask_case::causal, mask_case::everything}) {
      SCOPED_TRACE("sq " + std::to_string(sq) + " " + mask_case_name(m));
      seeded_rng seeded;
      problem pr;
      pr.b = 2, pr.hq = 8, pr.hkv = 2, pr.sq = sq, pr.skv = 700, pr.d = pr.dv = 64, pr.lay = layout::bshd;
      attention_case<float, half, half, float> c(pr, seeded.rng);
      std::vector<float> slopes, sinks;
      const attention_params params = make_params(m, pr, slopes, sinks, seeded.rng);
      const std::vector<std::int64_t> lengths(pr.b, pr.skv);
      const paged_copy<half> pk(c.k.cview(), lengths, page_size, seeded.rng);
      const paged_copy<half> pv(c.v.cview(), lengths, page_size, seeded.rng);
      const cpu<arch> backend{two_threads()};

      flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), backend);
      bhsd_tensor<float> o_paged(pr.b, pr.hq, pr.sq, pr.dv, pr.lay);
      tensor<float, 3> lse_paged({pr.b, pr.hq, pr.sq});
      flash_attention(c.q.cview(), pk.view, pv.view, o_paged.view, params, lse_paged.view(), backend);

      EXPECT_TRUE(same_bits(c.o.view, o_paged.view));
      EXPECT_EQ(std::memcmp(c.lse.data(), lse_paged.data(), sizeof(float) * lse_paged.size()), 0);
      c.expect_matches(c.oracle(params), tolerance_for<float, half, half, float>(), false);
    }
}

TEST_P(FlashPaged, SequencesOfDifferentLengths) {
  const std::int64_t page_size = GetParam();
  for (std::int64_t sq : {1, 40}) {
    seeded_rng seeded;
    problem pr;
    pr.b = 3, pr.hq = 4, pr.hkv = 1, pr.sq = sq, pr.skv = 333, pr.d = pr.dv = 32;
    attention_case<float, float, float, float> c(pr, seeded.rng);
    const std::vector<std::int64_t> lengths = {333, 41, 257};
    const paged_copy<float> pk(c.k.cview(), lengths, page_size, seeded.rng);
    const paged_copy<float> pv(c.v.cview(), lengths, page_size, seeded.rng);
    attention_params params;
    params.causal = true;
    flash_attention(c.q.cview(), pk.view, pv.view, c.o.view, params, c.lse.view(), cpu<arch>{two_threads()});
    // Each sequence against the oracle over its own prefix of keys.
    for (std::int64_t i = 0; i < pr.b; ++i) {
      const auto k_i = c.k.cview().slice(0, i, i + 1).slice(2, 0, lengths[i]);
      const auto v_i = c.v.cview().slice(0, i, i + 1).slice(2, 0, lengths[i]);
      const auto q_i = c.q.cview().slice(0, i, i + 1);
      const reference_result ref = reference_attention(q_i, k_i, v_i, params);
      const error_stats e = compare_output(tensor_view<const float, 4>(c.o.view.slice(0, i, i + 1)), ref);
      EXPECT_TRUE(e.within(1e-5)) << "sequence " << i << " rel_l2 " << e.rel_l2;
      for (std::int64_t h = 0; h < pr.hq; ++h)
        for (std::int64_t s = 0; s < sq; ++s) EXPECT_NEAR(c.lse(i, h, s), ref.row_lse(0, h, s), 1e-5);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(PageSizes, FlashPaged, ::testing::Values(1, 16, 256),
                         [](const auto& info) { return "page" + std::to_string(info.param); });

TEST(FlashCpuDeterminism, DecodeRepeatsAndPrefillIgnoresThreads) {
  seeded_rng seeded;
  for (std::int64_t sq : {1, 200}) {
    const problem pr{1, 8, 2, sq, 3000, 64, 64};  // b, hq, hkv, sq, skv, d, dv
    attention_case<float, float, float, float> c(pr, seeded.rng);
    bhsd_tensor<float> again(pr.b, pr.hq, pr.sq, pr.dv, pr.lay), serial(pr.b, pr.hq, pr.sq, pr.dv, pr.lay);
    const attention_params params;
    flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, {}, cpu<arch>{two_threads()});
    flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), again.view, params, {}, cpu<arch>{two_threads()});
    EXPECT_TRUE(same_bits(c.o.view, again.view)) << "sq " << sq;
    if (sq > 16) {  // prefill: each row is computed by one task in a fixed order, whatever the threads
      flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), serial.view, params, {}, cpu<arch>{executor::serial()});
      EXPECT_TRUE(same_bits(c.o.view, serial.view));
    }
  }
}

TEST(FlashCpuWorkspace, CallerWorkspaceIsUsedAndChecked) {
  seeded_rng seeded;
  for (std::int64_t sq : {1, 100}) {
    const problem pr{1, 4, 2, sq, 500, 48, 48};  // b, hq, hkv, sq, skv, d, dv
    attention_case<float, float, float, float> c(pr, seeded.rng);
    cpu<arch> backend{two_threads()};
    const std::size_t bytes = flash_attention_workspace_size(c.q.cview(), c.k.cview(), c.v.cview(), backend);
    std::vector<unsigned char> buffer(bytes, 0xff);
    backend.scratch = {buffer.data(), bytes};
    flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, {}, c.lse.view(), backend);
    c.expect_matches(c.oracle({}), 1e-5, false);
    EXPECT_NE(std::count(buffer.begin(), buffer.end(), 0xff), static_cast<std::ptrdiff_t>(bytes));

    bhsd_tensor<float> untouched(pr.b, pr.hq, pr.sq, pr.dv, pr.lay);
    std::fill_n(untouched.storage.data(), untouched.storage.size(), -1.0f);
    backend.scratch = {buffer.data(), bytes - 1};
    expect_error([&] { flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), untouched.view, {}, {}, backend); },
                 "attnkit: flash_attention: workspace.bytes must be >= " + std::to_string(bytes) +
                     " (the kernel's workspace_size), got " + std::to_string(bytes - 1));
    for (std::int64_t i = 0; i < untouched.storage.size(); ++i) ASSERT_EQ(untouched.storage.data()[i], -1.0f);
  }
}

/// Runs the paged call expecting `message`, with o left untouched.
void expect_paged_error(const paged_kv<const float>& k, const std::string& message) {
  tensor<float, 4> q({1, 2, 3, 8}, 0.5f), o({1, 2, 3, 8}, -1.0f);
  expect_error([&] { flash_attention(q.cview(), k, k, o.view(), {}, {}, cpu<arch>{executor::serial()}); },
               "attnkit: flash_attention: " + message);
  for (std::int64_t i = 0; i < o.size(); ++i) ASSERT_EQ(o.data()[i], -1.0f);
}

TEST(FlashPagedErrors, RejectsBadTables) {
  tensor<float, 4> pool({4, 1, 16, 8}, 0.25f);
  std::vector<std::int32_t> indptr = {0, 2}, indices = {3, 1}, last = {5};
  paged_kv<const float> k;
  k.pages = pool.cview();
  k.table.indptr = tensor_view<const std::int32_t, 1>(indptr.data(), {2});
  k.table.indices = tensor_view<const std::int32_t, 1>(indices.data(), {2});
  k.table.last_page_len = tensor_view<const std::int32_t, 1>(last.data(), {1});
  {
    tensor<float, 4> q({1, 2, 3, 8}, 0.5f), o({1, 2, 3, 8}, -1.0f);
    flash_attention(q.cview(), k, k, o.view(), {}, {}, cpu<arch>{executor::serial()});
    EXPECT_FLOAT_EQ(o(0, 1, 2, 7), 0.25f);  // the table itself is fine
  }
  indices[1] = 4;
  expect_paged_error(k, "k.table.indices(1) = 4 is not a page of the pool [0, 4)");
  indices[1] = 1;
  last[0] = 17;
  expect_paged_error(k, "k.table.last_page_len(0) must be in [1, page_size], got 17");
  last[0] = 5;
  indptr[1] = 3;
  expect_paged_error(k, "k.table.indptr(1) = 3 must be in [indptr(0) = 0, indices.extent(0) = 2]");
  indptr[1] = 2;
  tensor<float, 4> odd_pool({4, 1, 12, 8}, 0.0f);
  k.pages = odd_pool.cview();
  expect_paged_error(k, "k.pages.extent(2) (page_size) must be a power of two in [1, 256], got 12");
}

}  // namespace
}  // namespace attnkit::test
