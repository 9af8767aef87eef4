// cpu_dispatch from a binary built for the baseline x86-64 arch: it picks the
// best arch this CPU has and matches the fp64 oracle there, and it validates
// before dispatching.
#include <string>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "attnkit/backend/cpu/dispatch.hpp"
#include "support/attention_case.hpp"
#include "support/expect_error.hpp"

namespace attnkit::test {
namespace {

TEST(CpuDispatch, PicksTheBestArchThisCpuHas) {
  const std::string expected = xsimd::avx512bw::available() ? "avx512bw" : "fma3<avx2>";
  EXPECT_EQ(cpu_dispatch_arch(), expected);
}

template <class TQ, class TK, class TV, class TO>
void check_dispatch(std::int64_t sq, mask_case m) {
  problem pr;
  pr.hq = 8, pr.hkv = 2, pr.sq = sq, pr.skv = 300, pr.d = pr.dv = 80;
  check_against_oracle<TQ, TK, TV, TO>(
      pr, m,
      [](auto& c, const attention_params& params) {
        flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), cpu_dispatch{});
      },
      false);
}

TEST(CpuDispatch, EveryDispatchedTypeMatchesFp64Reference) {
  using dispatched = mix_list<dtype_mix<float, float, float, float, mask_case::everything>,
                              dtype_mix<half, half, half, half, mask_case::causal>,
                              dtype_mix<bfloat16, bfloat16, bfloat16, bfloat16, mask_case::sinks_window>,
                              dtype_mix<float, half, half, float, mask_case::alibi>,
                              dtype_mix<float, bfloat16, bfloat16, float, mask_case::softcap>>;
  for (std::int64_t sq : {1, 100})
    for_each_mix(dispatched{}, [&](auto mix) {
      using M = decltype(mix);
      check_dispatch<typename M::q, typename M::k, typename M::v, typename M::o>(sq, M::mask);
    });
}

TEST(CpuDispatch, CallerWorkspaceAndErrors) {
  tensor<float, 4> q({1, 4, 3, 8}, 0.5f), k({1, 2, 5, 8}, 0.25f), o({1, 4, 3, 8}, -1.0f);
  cpu_dispatch backend;
  std::vector<unsigned char> scratch(flash_attention_workspace_size(q.cview(), k.cview(), k.cview(), backend));
  backend.scratch = {scratch.data(), scratch.size()};
  flash_attention(q.cview(), k.cview(), k.cview(), o.view(), {}, {}, backend);
  EXPECT_FLOAT_EQ(o(0, 3, 2, 7), 0.25f);

  backend.scratch.bytes -= 1;
  tensor<float, 4> untouched({1, 4, 3, 8}, -1.0f);
  expect_error([&] { flash_attention(q.cview(), k.cview(), k.cview(), untouched.view(), {}, {}, backend); },
               "attnkit: flash_attention: workspace.bytes must be >= " + std::to_string(scratch.size()) +
                   " (the kernel's workspace_size), got " + std::to_string(scratch.size() - 1));
  tensor<float, 4> bad_k({1, 3, 5, 8}, 0.0f);
  expect_error(
      [&] { flash_attention(q.cview(), bad_k.cview(), bad_k.cview(), untouched.view(), {}, {}, cpu_dispatch{}); },
      "attnkit: flash_attention: q.extent(1) (hq) = 4 must be a multiple of k.extent(1) (hkv) = 3");
  for (std::int64_t i = 0; i < untouched.size(); ++i) ASSERT_EQ(untouched.data()[i], -1.0f);
}

}  // namespace
}  // namespace attnkit::test
