// The schedule of one query block under a block-sparse layout: which key tiles
// the tile body visits, and in which form. Listed blocks that every row of the
// block sees in full (no causal edge, window edge or bitmask cuts them) are
// gathered, keys from any blocks packed densely into tiles that need no mask
// at all, so a layout of small blocks runs as fast per visited key as a dense
// call. Everything else the rows see (the layout's sinks and window, and
// listed blocks the call's masks cut) is visited as aligned tiles that the
// body masks per element, as for a dense call. Visits come in ascending key order.
#pragma once

#include <algorithm>
#include <cstdint>

#include "attnkit/attention/variant.hpp"
#include "attnkit/core/config.hpp"

ATTNKIT_BEGIN_NAMESPACE
namespace detail {

/// Visits of rows [i0, i1), all in one query block of m's layout, over keys
/// [0, len) in tiles of `tile`: aligned(j0, j1) for the tile [j0, j1) at a
/// multiple of `tile` (mask it per element), gathered(keys, n) for n <= tile
/// ascending keys every row sees (no mask). Scratch: marks (ceil(len / tile)
/// bytes) and keys (tile entries).
template <class Aligned, class Gathered>
void for_each_sparse_visit(const attention_mask& m, std::int64_t i0, std::int64_t i1, std::int64_t len,
                           std::int64_t tile, std::uint8_t* marks, std::int64_t* keys, Aligned&& aligned,
                           Gathered&& gathered) {
  if (i0 >= i1 || len == 0) return;
  const sparse_blocks& sp = m.sparse;
  attention_mask base = m;  // the call's own masks
  base.sparse = {};
  const std::int64_t tiles = (len + tile - 1) / tile, qb = i0 / sp.block_q;
  std::fill(marks, marks + tiles, std::uint8_t{0});
  const auto mark = [&](std::int64_t lo, std::int64_t hi) {  // keys [lo, hi), clipped to [0, len)
    lo = std::max<std::int64_t>(lo, 0);
    hi = std::min(hi, len);
    for (std::int64_t t = lo / tile; lo < hi && t * tile < hi; ++t) marks[t] = 1;
  };
  // The layout's band: sinks, and the window of every row; both end at the last row's position.
  const std::int64_t end = m.position(i1 - 1) - m.span.k_pos + 1;
  mark(0, std::min(sp.sinks - m.span.k_pos, end));
  if (sp.window > 0) mark(m.position(i0) - m.span.k_pos - sp.window + 1, end);
  const auto block = [&](std::int64_t at, std::int64_t& lo, std::int64_t& hi) {
    lo = sp.id(at) * sp.block_k;
    hi = std::min(lo + sp.block_k, len);
    return base.classify(i0, i1, lo, hi);
  };
  std::int64_t lo = 0, hi = 0;
  for (std::int64_t at = sp.lower_bound(qb, 0); at < sp.list_end(qb); ++at)
    if (block(at, lo, hi) == tile_state::partial) mark(lo, hi);

  std::int64_t n = 0, next_mark = 0;  // gathered keys waiting; marked tiles below next_mark are visited
  const auto flush = [&] {
    if (n > 0) gathered(static_cast<const std::int64_t*>(keys), n);
    n = 0;
  };
  const auto visit_marks_below = [&](std::int64_t t_end) {
    for (; next_mark < t_end; ++next_mark)
      if (marks[next_mark]) {
        flush();
        aligned(next_mark * tile, std::min(len, (next_mark + 1) * tile));
      }
  };
  for (std::int64_t at = sp.lower_bound(qb, 0); at < sp.list_end(qb); ++at) {
    if (block(at, lo, hi) != tile_state::full) continue;
    for (std::int64_t j = lo; j < hi;) {
      const std::int64_t t = j / tile, e = std::min(hi, (t + 1) * tile);
      visit_marks_below(t);
      if (!marks[t])
        for (; j < e; ++j) {
          keys[n++] = j;
          if (n == tile) flush();
        }
      j = e;
    }
  }
  visit_marks_below(tiles);
  flush();
}

}  // namespace detail
ATTNKIT_END_NAMESPACE
