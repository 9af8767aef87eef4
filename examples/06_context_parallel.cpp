// 06_context_parallel: one long prefill spread over MPI ranks by its keys.
//
// Every rank holds all query rows but only its shard of the keys and values:
// rank r of n gets keys [r * skv / n, (r + 1) * skv / n). It attends its shard
// with flash_attention, giving the shard's key positions through
// attention_args::k_pos, so the causal mask, the sliding window and ALiBi act
// on true positions. The partial results (o, lse) go to rank 0, which folds
// them with merge_states in rank order: that is the attention over all keys.
// A learned sink logit would join one denominator only, so only rank 0 would
// pass it. Rank 0 checks the merge against one flash_attention call over the
// whole sequence and exits non-zero if they differ by more than 1e-5.
//
//   mpirun -np 4 ./06_context_parallel [skv]
#include <attnkit/attnkit.hpp>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

using namespace attnkit;

namespace {

constexpr std::int64_t hq = 8, hkv = 2, d = 64;

std::vector<float> random_floats(std::size_t n, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const std::int64_t skv = argc > 1 ? std::atoll(argv[1]) : 3000, sq = skv;

  // The same inputs everywhere (a real engine would hold only its shard of K and V).
  const std::vector<float> q = random_floats(hq * sq * d, 1), k = random_floats(hkv * skv * d, 2),
                           v = random_floats(hkv * skv * d, 3);
  std::vector<float> slopes(hq);
  for (std::int64_t h = 0; h < hq; ++h) slopes[h] = std::exp2(-8.0f * (h + 1) / hq);
  attention_params params;
  params.causal = true;
  params.window_left = 1000;
  params.alibi_slopes = tensor_view<const float, 1>(slopes.data(), {hq});

  // This rank's shard of the keys, at its positions; the queries sit at 0..sq-1.
  const std::int64_t j0 = rank * skv / ranks, j1 = (rank + 1) * skv / ranks;
  const auto q_view = make_bhsd(q.data(), 1, hq, sq, d);
  const auto k_shard = make_bhsd(k.data(), 1, hkv, skv, d).slice(2, j0, j1);  // (1, hkv, j1 - j0, d)
  const auto v_shard = make_bhsd(v.data(), 1, hkv, skv, d).slice(2, j0, j1);
  std::vector<float> o(hq * sq * d), lse(hq * sq);
  const std::int64_t q_pos = 0, k_pos = j0;
  auto args = make_attention_args(q_view, k_shard, v_shard, make_bhsd(o.data(), 1, hq, sq, d));
  args.params = params;
  args.lse = tensor_view<float, 3>(lse.data(), {1, hq, sq});
  args.q_pos = tensor_view<const std::int64_t, 1>(&q_pos, {1});
  args.k_pos = tensor_view<const std::int64_t, 1>(&k_pos, {1});
  flash_attention(args);

  // Rank 0 gathers every shard's (o, lse) and merges them in rank order.
  std::vector<float> all_o(rank == 0 ? o.size() * ranks : 0), all_lse(rank == 0 ? lse.size() * ranks : 0);
  MPI_Gather(o.data(), static_cast<int>(o.size()), MPI_FLOAT, all_o.data(), static_cast<int>(o.size()), MPI_FLOAT, 0,
             MPI_COMM_WORLD);
  MPI_Gather(lse.data(), static_cast<int>(lse.size()), MPI_FLOAT, all_lse.data(), static_cast<int>(lse.size()),
             MPI_FLOAT, 0, MPI_COMM_WORLD);
  int status = 0;
  if (rank == 0) {
    const auto o_of = [&](int r) { return make_bhsd(all_o.data() + r * o.size(), 1, hq, sq, d); };
    const auto lse_of = [&](int r) { return tensor_view<float, 3>(all_lse.data() + r * lse.size(), {1, hq, sq}); };
    for (int r = 1; r < ranks; ++r)  // shard 0's state absorbs each next shard in place
      merge_states(o_of(0), tensor_view<const float, 3>(lse_of(0)), o_of(r), tensor_view<const float, 3>(lse_of(r)),
                   o_of(0), lse_of(0));

    std::vector<float> whole(o.size()), whole_lse(lse.size());
    flash_attention(q_view, make_bhsd(k.data(), 1, hkv, skv, d), make_bhsd(v.data(), 1, hkv, skv, d),
                    make_bhsd(whole.data(), 1, hq, sq, d), params, tensor_view<float, 3>(whole_lse.data(), {1, hq, sq}));
    double worst = 0, worst_lse = 0;
    for (std::size_t x = 0; x < whole.size(); ++x) worst = std::max(worst, double(std::abs(all_o[x] - whole[x])));
    for (std::size_t x = 0; x < whole_lse.size(); ++x)
      worst_lse = std::max(worst_lse, double(std::abs(all_lse[x] - whole_lse[x])) / std::max(1.0f, std::abs(whole_lse[x])));
    std::printf("context parallel over %d ranks: %lld queries x %lld keys, max |o - single| = %.3g, "
                "max rel |lse - single| = %.3g\n",
                ranks, static_cast<long long>(sq), static_cast<long long>(skv), worst, worst_lse);
    status = worst <= 1e-5 && worst_lse <= 1e-5 ? 0 : 1;
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Finalize();
  return status;
}
