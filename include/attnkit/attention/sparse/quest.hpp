// Quest (query-aware page selection for decode): a producer of
// block_sparse_layout. Keys are grouped in pages of page_size rows (by index:
// page x holds keys [x * page_size, (x + 1) * page_size)); each page keeps the
// channel-wise min and max of its keys, updated as keys are appended. For a
// query q the page's bound
//     bound = sum over channels c of max(q_c * min_c, q_c * max_c)
// is >= q.k for every key k in the page, so the pages with the highest bounds
// are the only ones that can hold the highest scores. Each query row attends
// the budget / page_size pages of highest bound, one of them always the page
// that holds its own position (the local page). Reads 2 * d floats per page
// instead of page_size * d key elements.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/check_args.hpp"
#include "attnkit/attention/schedule.hpp"
#include "attnkit/attention/sparse/layout.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/parallel.hpp"
#include "attnkit/core/tensor.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// The per-page channel bounds of the keys of b sequences with hkv heads.
struct quest_bounds {
  std::int64_t page_size = 16;
  tensor<float, 4> min, max;  // (b, hkv, pages, d): +inf / -inf for a page with no key yet

  quest_bounds() = default;
  /// Empty bounds for sequences of up to max_keys keys.
  quest_bounds(std::int64_t b, std::int64_t hkv, std::int64_t max_keys, std::int64_t d, std::int64_t page)
      : page_size(page),
        min({b, hkv, (max_keys + page - 1) / page, d}, std::numeric_limits<float>::infinity()),
        max({b, hkv, (max_keys + page - 1) / page, d}, -std::numeric_limits<float>::infinity()) {
    ATTNKIT_CHECK(page >= 1, "quest_bounds: page_size must be >= 1, got ", page);
  }

  std::int64_t pages() const { return min.extents()[2]; }

  /// Takes key j of head h of sequence b into its page's bounds (call on append):
  /// its values are to_float(row[x]) * scale.
  template <class T>
  void add(std::int64_t b, std::int64_t h, std::int64_t j, const T* row, float scale = 1.0f) {
    ATTNKIT_CHECK(j >= 0 && j / page_size < pages(), "quest_bounds::add: key ", j, " is past the ", pages(),
                  " pages of ", page_size, " keys");
    float* lo = &min(b, h, j / page_size, 0);
    float* hi = &max(b, h, j / page_size, 0);
    for (std::int64_t x = 0; x < min.extents()[3]; ++x) {
      const float v = to_float(row[x]) * scale;
      lo[x] = std::min(lo[x], v);
      hi[x] = std::max(hi[x], v);
    }
  }
};

namespace detail {

/// sum over c < d of max(q_c lo_c, q_c hi_c): the most q.k can be for a key inside [lo, hi].
inline float quest_bound(const float* q, const float* lo, const float* hi, std::int64_t d) {
  constexpr int W = 16;  // independent partial sums: the loop vectorizes without reassociating
  float part[W] = {};
  std::int64_t y = 0;
  for (; y + W <= d; y += W)
    for (int u = 0; u < W; ++u) part[u] += std::max(q[y + u] * lo[y + u], q[y + u] * hi[y + u]);
  for (int u = 0; y + u < d; ++u) part[u] += std::max(q[y + u] * lo[y + u], q[y + u] * hi[y + u]);
  float sum = 0.0f;
  for (int u = 0; u < W; ++u) sum += part[u];
  return sum;
}

}  // namespace detail

/// Defaults: Quest's 16-key pages and a 2048-key budget.
struct quest_options {
  std::int64_t budget = 2048;   // keys each query row attends: budget / page_size pages (at least 1)
  std::int64_t head_group = 1;  // query heads sharing one list (1 .. hq / hkv); a group scores by its best head
};

/// The bounds of every key of args.k (strided or paged, any element type).
template <class TQ, class TK, class TV, class TO>
quest_bounds quest_page_bounds(const attention_args<TQ, TK, TV, TO>& args, std::int64_t page_size = 16) {
  const detail::checked_call c = detail::check_args("quest_page_bounds", args, false);
  quest_bounds bounds(c.s.b, c.s.hkv, c.s.skv, c.s.d, page_size);
  detail::with_kv_rows(args.k, args.v, [&](const auto& k, const auto&) {
    for (std::int64_t b = 0; b < c.s.b; ++b)
      for (std::int64_t h = 0; h < c.s.hkv; ++h)
        for (std::int64_t j = 0; j < k.length(b); ++j) bounds.add(b, h, j, k.row(b, h, j), k.scale(b, h, j));
  });
  return bounds;
}

/// The Quest layout of a call (block_q 1, block_k = the bounds' page size): for
/// each sequence, head group and query row, the pages of highest bound among
/// those its position reaches, the local page always among them.
template <class TQ, class TK, class TV, class TO>
owned_layout quest_layout(const attention_args<TQ, TK, TV, TO>& args, const quest_bounds& bounds,
                          const quest_options& opt = {}, const executor& exec = default_executor()) {
  constexpr const char* fn = "quest_layout";
  attention_args<TQ, TK, TV, TO> a = args;
  a.sparse = {};
  const detail::checked_call c = detail::check_args(fn, a, false);
  const attention_shape& s = c.s;
  const std::int64_t group = s.hq / s.hkv, ps = bounds.page_size;
  ATTNKIT_CHECK(opt.budget >= 1, fn, ": options.budget must be >= 1, got ", opt.budget);
  ATTNKIT_CHECK(opt.head_group >= 1 && group % opt.head_group == 0, fn,
                ": options.head_group must divide the GQA group hq / hkv = ", group, ", got ", opt.head_group);
  const auto& e = bounds.min.extents();
  ATTNKIT_CHECK(e[0] == s.b && e[1] == s.hkv && e[3] == s.d && e[2] * ps >= s.skv, fn, ": bounds of (", e[0], ", ",
                e[1], ", ", e[2], " pages of ", ps, ", ", e[3], ") do not cover b = ", s.b, ", hkv = ", s.hkv,
                ", skv = ", s.skv, ", d = ", s.d);
  owned_layout out;
  out.shape.block_q = 1;
  out.shape.block_k = ps;
  out.shape.head_group = opt.head_group;
  out.b = s.b;
  out.groups = s.hq / opt.head_group;
  out.qblocks = s.sq;
  const std::int64_t keep = std::max<std::int64_t>(1, opt.budget / ps), items = out.b * out.groups * out.qblocks;
  const std::int64_t per_kv = group / opt.head_group;  // head groups of one KV head
  std::vector<std::int64_t> kept(static_cast<std::size_t>(items * keep)), counts(static_cast<std::size_t>(items), 0);
  struct scratch {
    std::vector<float> q, score;  // the KV head's query rows (group, d); (per_kv, pages) scores
    std::vector<std::int64_t> order;
  };
  std::vector<scratch> slots(static_cast<std::size_t>(exec.concurrency()));
  const auto length = [&](std::int64_t b) { return a.k.is_paged ? a.k.paged.length(b) : s.skv; };
  // One item per (sequence, KV head, row): the bounds are read once for every head of the group.
  parallel_for_slots(exec, s.b * s.hkv * s.sq, [&](std::int64_t item, std::int64_t slot) {
    const std::int64_t b = item / (s.hkv * s.sq), hk = item / s.sq % s.hkv, i = item % s.sq, len = length(b);
    if (i >= c.batch.rows(b)) return;
    const sequence_span span = c.batch.span(b, len);
    const std::int64_t seen = a.params.causal ? std::clamp<std::int64_t>(span.q_pos + i + 1 - span.k_pos, 0, len) : len;
    const std::int64_t pages = (seen + ps - 1) / ps;
    const auto list_of = [&](std::int64_t x) {  // head group x of this KV head
      return ((b * out.groups + hk * per_kv + x) * out.qblocks + i);
    };
    if (pages <= keep) {
      for (std::int64_t x = 0; x < per_kv; ++x) {
        std::iota(kept.data() + list_of(x) * keep, kept.data() + list_of(x) * keep + pages, std::int64_t{0});
        counts[static_cast<std::size_t>(list_of(x))] = pages;
      }
      return;
    }
    scratch& sc = slots[static_cast<std::size_t>(slot)];
    sc.q.resize(static_cast<std::size_t>(group * s.d));
    for (std::int64_t h = 0; h < group; ++h)
      for (std::int64_t y = 0; y < s.d; ++y)
        sc.q[static_cast<std::size_t>(h * s.d + y)] = to_float(a.q(c.batch.q_batch(b), hk * group + h, c.batch.row0(b) + i, y));
    sc.score.assign(static_cast<std::size_t>(per_kv * pages), -std::numeric_limits<float>::infinity());
    for (std::int64_t x = 0; x < pages - 1; ++x) {  // the local page is kept anyway
      const float* lo = &bounds.min(b, hk, x, 0);
      const float* hi = &bounds.max(b, hk, x, 0);
      for (std::int64_t h = 0; h < group; ++h) {
        float& best = sc.score[static_cast<std::size_t>(h / opt.head_group * pages + x)];
        best = std::max(best, detail::quest_bound(sc.q.data() + h * s.d, lo, hi, s.d));
      }
    }
    for (std::int64_t x = 0; x < per_kv; ++x) {
      const float* score = sc.score.data() + x * pages;
      sc.order.resize(static_cast<std::size_t>(pages - 1));
      std::iota(sc.order.begin(), sc.order.end(), std::int64_t{0});
      std::partial_sort(sc.order.begin(), sc.order.begin() + (keep - 1), sc.order.end(),
                        [&](std::int64_t u, std::int64_t w) { return score[u] > score[w] || (score[u] == score[w] && u < w); });
      std::int64_t* list = kept.data() + list_of(x) * keep;
      std::copy(sc.order.begin(), sc.order.begin() + (keep - 1), list);
      list[keep - 1] = pages - 1;
      std::sort(list, list + keep);
      counts[static_cast<std::size_t>(list_of(x))] = keep;
    }
  });
  out.set_lists(kept.data(), keep, counts.data());
  return out;
}

ATTNKIT_END_NAMESPACE
