// HiP (hierarchically pruned attention): a producer of block_sparse_layout.
// For each block of query rows it finds about top_k keys by a hierarchical
// top-k search over key blocks, in O(n * k * log(n / k) * d / reduce_stride)
// for the whole sequence instead of dense attention's O(n^2 * d):
//
//   The candidates are the key blocks the block's last row can see, minus the
//   last `window` keys (the layout's window covers those). With N candidate
//   blocks and a budget of K = ceil(top_k / block_k) blocks, K branches start
//   as K equal runs of blocks. Each round splits every branch in two at its
//   middle, scores each half by its representative token (the max over every
//   reduce_stride-th query row of the block, over the heads of its group, of
//   q.k), and keeps the K best halves, ties to the lower start. When every
//   branch is one block, their blocks are the list. N <= K keeps every block.
//
// Sinks and the window join as the layout's token-exact sinks and window.
// Scores are raw q.k: a common scale does not change a ranking.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/check_args.hpp"
#include "attnkit/attention/schedule.hpp"
#include "attnkit/attention/sparse/dots.hpp"
#include "attnkit/attention/sparse/layout.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/backend/tags.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/tensor.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// Which token of a branch stands for it: its first (the reference code's
/// choice), its center, or one drawn at random (from `seed` and the branch).
enum class hip_representative { first, center, random };

/// Defaults: HiP v1.2's block sizes, budget, sinks and window.
struct hip_options {
  std::int64_t top_k = 2048;     // keys each query block keeps besides sinks and window (whole blocks)
  std::int64_t block_q = 64;     // query rows per query block
  std::int64_t block_k = 64;     // keys per key block
  std::int64_t sinks = 256;      // first keys every row attends
  std::int64_t window = 512;     // last keys before (and at) each row it attends
  std::int64_t reduce_stride = 2;  // every reduce_stride-th row of a query block scores branches
  std::int64_t head_group = 1;   // query heads sharing one list (1 .. hq / hkv)
  hip_representative representative = hip_representative::first;
  std::uint64_t seed = 0;        // hip_representative::random only
};

namespace detail {

/// A branch of the search: key blocks [start, end), and its score.
struct hip_branch {
  std::int64_t start, end;
  float score;
};

/// The token that stands for keys [lo, hi) (hi > lo).
inline std::int64_t hip_token(const hip_options& opt, std::int64_t lo, std::int64_t hi, std::uint64_t salt) {
  if (opt.representative == hip_representative::first) return lo;
  if (opt.representative == hip_representative::center) return lo + (hi - lo) / 2;
  std::uint64_t x = opt.seed ^ (salt * 0x9E3779B97F4A7C15ull) ^ (static_cast<std::uint64_t>(lo) << 32 ^ static_cast<std::uint64_t>(hi));
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;  // splitmix64's finalizer
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return lo + static_cast<std::int64_t>(x % static_cast<std::uint64_t>(hi - lo));
}

/// The hierarchical search over `blocks` candidate key blocks with a budget of
/// `budget` blocks; score(halves) sets the score of each branch of a round.
/// Writes the kept block ids, ascending, to out and returns how many.
template <class Score>
std::int64_t hip_search(std::int64_t blocks, std::int64_t budget, const Score& score, std::vector<hip_branch>& branches,
                        std::vector<hip_branch>& halves, std::int64_t* out) {
  if (blocks <= budget) {
    for (std::int64_t x = 0; x < blocks; ++x) out[x] = x;
    return blocks;
  }
  branches.clear();
  for (std::int64_t x = 0; x < budget; ++x) branches.push_back({x * blocks / budget, (x + 1) * blocks / budget, 0.0f});
  const auto wider = [](const hip_branch& a) { return a.end - a.start > 1; };
  while (std::any_of(branches.begin(), branches.end(), wider)) {
    halves.clear();
    for (const hip_branch& br : branches) {
      const std::int64_t mid = br.start + (br.end - br.start) / 2;
      if (mid > br.start) halves.push_back({br.start, mid, 0.0f});
      halves.push_back({mid, br.end, 0.0f});
    }
    score(halves);
    const auto better = [](const hip_branch& a, const hip_branch& b) {
      return a.score > b.score || (a.score == b.score && a.start < b.start);
    };
    std::partial_sort(halves.begin(), halves.begin() + budget, halves.end(), better);
    branches.assign(halves.begin(), halves.begin() + budget);
  }
  for (std::int64_t x = 0; x < budget; ++x) out[x] = branches[static_cast<std::size_t>(x)].start;
  std::sort(out, out + budget);
  return budget;
}

inline void check_hip_options(const char* fn, const hip_options& o, std::int64_t group) {
  constexpr std::int64_t limit = std::int64_t{1} << 40;
  ATTNKIT_CHECK(o.top_k >= 0 && o.top_k < limit, fn, ": options.top_k must be in [0, 2^40), got ", o.top_k);
  ATTNKIT_CHECK(o.block_q >= 1 && o.block_q < limit, fn, ": options.block_q must be in [1, 2^40), got ", o.block_q);
  ATTNKIT_CHECK(o.block_k >= 1 && o.block_k < limit, fn, ": options.block_k must be in [1, 2^40), got ", o.block_k);
  ATTNKIT_CHECK(o.sinks >= 0 && o.sinks < limit, fn, ": options.sinks must be in [0, 2^40), got ", o.sinks);
  ATTNKIT_CHECK(o.window >= 0 && o.window < limit, fn, ": options.window must be in [0, 2^40), got ", o.window);
  ATTNKIT_CHECK(o.reduce_stride >= 1 && o.reduce_stride < limit, fn, ": options.reduce_stride must be in [1, 2^40), got ",
                o.reduce_stride);
  ATTNKIT_CHECK(o.head_group >= 1 && group % o.head_group == 0, fn,
                ": options.head_group must divide the GQA group hq / hkv = ", group, ", got ", o.head_group);
}

}  // namespace detail

/// The HiP layout of a call: for each sequence, head group and block of
/// opt.block_q query rows of args (any form: strided or paged, quantized,
/// ragged, with positions), the key blocks of its search; the layout's sinks
/// and window are opt's. Reads q and the representative keys only. With
/// params.causal, a block's candidates are the keys its last row can see.
/// Set args.sparse = layout.view() to run attention over it. The scores run
/// on `backend` (reference, or cpu<Arch> with its executor).
template <class TQ, class TK, class TV, class TO, class Backend = cpu_native>
owned_layout hip_layout(const attention_args<TQ, TK, TV, TO>& args, const hip_options& opt = {},
                        const Backend& backend = {}) {
  constexpr const char* fn = "hip_layout";
  attention_args<TQ, TK, TV, TO> a = args;
  a.sparse = {};  // the layout being built replaces any given one
  const detail::checked_call c = detail::check_args(fn, a, false);
  const attention_shape& s = c.s;
  const std::int64_t group = s.hq / s.hkv;
  detail::check_hip_options(fn, opt, group);
  owned_layout out;
  out.shape.block_q = opt.block_q;
  out.shape.block_k = opt.block_k;
  out.shape.head_group = opt.head_group;
  out.shape.sinks = opt.sinks;
  out.shape.window = opt.window;
  out.b = s.b;
  out.groups = s.hq / opt.head_group;
  out.qblocks = (s.sq + opt.block_q - 1) / opt.block_q;
  const std::int64_t budget = (opt.top_k + opt.block_k - 1) / opt.block_k, per_item = std::max<std::int64_t>(budget, 1);
  const std::int64_t items = out.b * out.groups * out.qblocks;
  std::vector<std::int64_t> kept(static_cast<std::size_t>(items * per_item)), counts(static_cast<std::size_t>(items), 0);

  detail::with_kv_rows(a.k, a.v, [&](const auto& k, const auto&) {
    constexpr std::int64_t W = 16;  // rows padded to whole registers (AVX-512's lanes)
    const std::int64_t most_rows = opt.head_group * ((opt.block_q + opt.reduce_stride - 1) / opt.reduce_stride);
    const std::int64_t score_rows = (most_rows + W - 1) / W * W;  // padded with zero rows
    const std::int64_t most_halves = 2 * budget;
    struct scratch {
      tensor<float, 2> qt, reps, dots;  // (d, score_rows); (2 * budget, d); (2 * budget, score_rows)
      std::vector<detail::hip_branch> branches, halves;
    };
    const executor exec = detail::executor_of(backend);
    std::vector<scratch> slots(static_cast<std::size_t>(exec.concurrency()));
    for (scratch& sc : slots) {
      sc.qt = tensor<float, 2>({s.d, score_rows}, 0.0f);
      sc.reps = tensor<float, 2>({most_halves, s.d});
      sc.dots = tensor<float, 2>({most_halves, score_rows});
    }
    parallel_for_slots(exec, items, [&](std::int64_t item, std::int64_t slot) {
      const std::int64_t b = item / (out.groups * out.qblocks), g = item / out.qblocks % out.groups;
      const std::int64_t qb = item % out.qblocks, i0 = qb * opt.block_q;
      const std::int64_t i1 = std::min(c.batch.rows(b), i0 + opt.block_q), len = k.length(b);
      if (i0 >= i1) return;
      const sequence_span span = c.batch.span(b, len);
      const std::int64_t seen = a.params.causal ? std::clamp<std::int64_t>(span.q_pos + i1 - span.k_pos, 0, len) : len;
      const std::int64_t candidates = std::max<std::int64_t>(0, seen - opt.window);
      const std::int64_t blocks = (candidates + opt.block_k - 1) / opt.block_k;
      scratch& sc = slots[static_cast<std::size_t>(slot)];
      if (blocks <= budget) {  // every candidate kept: nothing to score
        std::iota(kept.data() + item * per_item, kept.data() + item * per_item + blocks, std::int64_t{0});
        counts[static_cast<std::size_t>(item)] = blocks;
        return;
      }
      // The scoring rows, transposed to (d, rows): a round's scores are one product.
      std::int64_t rows = 0;
      for (std::int64_t h = g * opt.head_group; h < (g + 1) * opt.head_group; ++h)
        for (std::int64_t i = i0; i < i1; i += opt.reduce_stride, ++rows)
          for (std::int64_t x = 0; x < s.d; ++x) sc.qt(x, rows) = to_float(a.q(c.batch.q_batch(b), h, c.batch.row0(b) + i, x));
      for (std::int64_t r = rows; r < score_rows; ++r)
        for (std::int64_t x = 0; x < s.d; ++x) sc.qt(x, r) = 0.0f;
      const std::int64_t hk = g * opt.head_group / group;
      const auto score = [&](std::vector<detail::hip_branch>& halves) {
        const std::int64_t n = static_cast<std::int64_t>(halves.size());
        for (std::int64_t x = 0; x < n; ++x) {  // each half's representative key
          const detail::hip_branch& br = halves[static_cast<std::size_t>(x)];
          const std::int64_t j = detail::hip_token(opt, br.start * opt.block_k, std::min(br.end * opt.block_k, candidates),
                                                   static_cast<std::uint64_t>(item));
          const auto* kr = k.row(b, hk, j);
          const float ks = k.scale(b, hk, j);
          for (std::int64_t y = 0; y < s.d; ++y) sc.reps(x, y) = to_float(kr[y]) * ks;
        }
        detail::row_dots(backend, sc.reps.data(), sc.qt.data(), n, s.d, score_rows, sc.dots.data());
        for (std::int64_t x = 0; x < n; ++x) {
          const float* d = &sc.dots(x, 0);
          halves[static_cast<std::size_t>(x)].score = *std::max_element(d, d + rows);
        }
      };
      counts[static_cast<std::size_t>(item)] =
          detail::hip_search(blocks, budget, score, sc.branches, sc.halves, kept.data() + item * per_item);
    });
  });

  out.set_lists(kept.data(), per_item, counts.data());
  return out;
}

ATTNKIT_END_NAMESPACE
