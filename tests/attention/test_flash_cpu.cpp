// flash_attention on the cpu<Arch> backend against the fp64 oracle, on every
// compiled arch and on 1 and 2 threads: the size x mask sweep (prefill and the
// split-KV decode path), head dims, GQA, layouts, dtypes; paged KV bit for bit
// equal to contiguous; determinism; workspace; bad input.
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "attnkit/attention/flash.hpp"
#include "support/attention_case.hpp"
#include "support/cpu_archs.hpp"

namespace attnkit::test {
namespace {

executor threads_executor(int threads) {
  if (threads == 1) return executor::serial();
#if defined(_OPENMP)
  return executor::openmp(threads);
#else
  return executor::custom(threads, [](std::int64_t n, const std::function<void(std::int64_t)>& task) {
    for (std::int64_t i = n - 1; i >= 0; --i) task(i);  // reversed: order must not matter
  });
#endif
}

/// An arch and a thread count.
struct cpu_config {
  cpu_arch arch;
  int threads;
};

std::vector<cpu_config> cpu_configs() {
  std::vector<cpu_config> all;
  for (cpu_arch a : compiled_cpu_archs())
    for (int t : {1, 2}) all.push_back({a, t});
  return all;
}

std::string config_name(const cpu_config& c) {
  return std::string(cpu_arch_name(c.arch)) + "_t" + std::to_string(c.threads);
}

template <class TQ, class TK, class TV, class TO>
void check_cpu(const problem& pr, mask_case m, const cpu_config& cfg) {
  with_cpu_arch(cfg.arch, [&](auto arch) {
    using A = decltype(arch);
    const cpu<A> backend{threads_executor(cfg.threads)};
    check_against_oracle<TQ, TK, TV, TO>(
        pr, m,
        [&](auto& c, const attention_params& params) {
          flash_attention(c.q.cview(), c.k.cview(), c.v.cview(), c.o.view, params, c.lse.view(), backend);
        },
        false);
  });
}

using sweep_param = std::tuple<cpu_config, std::int64_t, std::int64_t, mask_case>;

std::string sweep_name(const ::testing::TestParamInfo<sweep_param>& info) {
  const auto& [cfg, sq, skv, m] = info.param;
  return config_name(cfg) + "_sq" + std::to_string(sq) + "_skv" + std::to_string(skv) + "_" + mask_case_name(m);
}

// Prefill sizes (GQA 4, so sq = 1 takes the decode path too).
class FlashCpuSizes : public ::testing::TestWithParam<sweep_param> {};

TEST_P(FlashCpuSizes, MatchesFp64Reference) {
  const auto& [cfg, sq, skv, m] = GetParam();
  problem pr;
  const bool big = sq * skv > 100000;  // keeps the fp64 oracle quick
  pr.b = big ? 1 : 2, pr.hq = big ? 2 : 4, pr.hkv = 1, pr.sq = sq, pr.skv = skv, pr.d = pr.dv = 64;
  pr.lay = layout::bshd;
  check_cpu<float, float, float, float>(pr, m, cfg);
}

INSTANTIATE_TEST_SUITE_P(Flash, FlashCpuSizes,
                         ::testing::Combine(::testing::ValuesIn(cpu_configs()),
                                            ::testing::Values(1, 7, 31, 127, 300, 1000),
                                            ::testing::Values(1, 7, 31, 127, 300, 1000),
                                            ::testing::ValuesIn(all_mask_cases())),
                         sweep_name);

// Decode: a few query rows per GQA group against long and awkward KV lengths, split across chunks.
class FlashCpuDecode : public ::testing::TestWithParam<sweep_param> {};

TEST_P(FlashCpuDecode, MatchesFp64Reference) {
  const auto& [cfg, sq, skv, m] = GetParam();
  problem pr;
  pr.b = 2, pr.hq = 8, pr.hkv = 2, pr.sq = sq, pr.skv = skv, pr.d = pr.dv = 128;
  check_cpu<float, half, half, float>(pr, m, cfg);
}

INSTANTIATE_TEST_SUITE_P(Flash, FlashCpuDecode,
                         ::testing::Combine(::testing::ValuesIn(cpu_configs()), ::testing::Values(1, 3),
                                            ::testing::Values(1, 7, 31, 300, 1000, 4097),
                                            ::testing::ValuesIn(all_mask_cases())),
                         sweep_name);

class FlashCpu : public ::testing::TestWithParam<cpu_config> {};

// A group's decode rows read full tiles of K and V in place: rows in register
// blocks of 8, 4, 2 and 1 (group 7; 16 rows), a lone row (group 1, sq 1), tiles
// of 128 keys (8 rows or more) and of the lanes, masks that leave partial tiles
// to the staged path, and a value width (80) that ends in a partial block of
// registers.
TEST_P(FlashCpu, DecodeGroupTilesReadInPlace) {
  for (std::int64_t group : {1, 2, 7, 8})
    for (std::int64_t sq : {1, 2})
      for (std::int64_t d : {80, 128})
        for (mask_case m : {mask_case::none, mask_case::causal_window, mask_case::everything}) {
          SCOPED_TRACE("group " + std::to_string(group) + " sq " + std::to_string(sq) + " d " + std::to_string(d) +
                       " " + mask_case_name(m));
          problem pr;
          pr.hkv = 2, pr.hq = 2 * group, pr.sq = sq, pr.skv = 1000, pr.d = pr.dv = d;
          check_cpu<float, half, half, float>(pr, m, GetParam());
        }
}

TEST_P(FlashCpu, HeadDimsGqaAndLayouts) {
  for (std::int64_t sq : {1, 31})
    for (std::int64_t d : {1, 33, 64, 80, 96, 128, 256})
      for (std::int64_t group : {1, 3, 4, 8})  // 3: an odd number of decode rows
        for (layout lay : {layout::bhsd, layout::bshd}) {
          SCOPED_TRACE("sq " + std::to_string(sq) + " d " + std::to_string(d) + " group " + std::to_string(group) +
                       " " + layout_name(lay));
          problem pr;
          pr.hkv = 2, pr.hq = 2 * group, pr.sq = sq, pr.skv = 127, pr.d = pr.dv = d, pr.lay = lay;
          check_cpu<float, float, float, float>(pr, mask_case::everything, GetParam());
        }
}

TEST_P(FlashCpu, ValueDimDiffersFromKeyDim) {
  for (std::int64_t sq : {1, 100}) {
    problem pr;
    pr.hq = 4, pr.hkv = 2, pr.sq = sq, pr.skv = 200, pr.d = 96, pr.dv = 40;
    check_cpu<float, float, float, float>(pr, mask_case::causal, GetParam());
  }
}

TEST_P(FlashCpu, ReducedPrecisionTypes) {
  for (std::int64_t sq : {2, 127}) {
    problem pr;
    pr.hq = 8, pr.hkv = 2, pr.sq = sq, pr.skv = 300, pr.d = pr.dv = 128;
    for_each_mix(reduced_precision_mixes{}, [&](auto mix) {
      using M = decltype(mix);
      check_cpu<typename M::q, typename M::k, typename M::v, typename M::o>(pr, M::mask, GetParam());
    });
  }
}

TEST_P(FlashCpu, EmptyKeysGiveZeroRows) {
  problem pr;
  pr.hq = 2, pr.hkv = 1, pr.sq = 5, pr.skv = 0, pr.d = pr.dv = 16;
  check_cpu<float, float, float, float>(pr, mask_case::none, GetParam());
  check_cpu<float, float, float, float>(pr, mask_case::sink_logit, GetParam());
}

INSTANTIATE_TEST_SUITE_P(Archs, FlashCpu, ::testing::ValuesIn(cpu_configs()),
                         [](const auto& info) { return config_name(info.param); });

}  // namespace
}  // namespace attnkit::test
