// Landmark attention: retrieval of key blocks by their landmark keys, and the
// grouped softmax over the retrieved blocks and the row's own block.
//
// Keys come in blocks of `block` (block g: keys [g * block, (g + 1) * block))
// and each block has a landmark key l_g, trained to stand for it. Row i, whose
// position falls in block L, scores every earlier block by s(i, l_g) = scale *
// q.l_g, retrieves the top_k (ties to the lower block) and attends
//   o_i = [sum_{g in R} e^{s(i, l_g)} o_g + sum_{j in L} e^{s_ij} v_j]
//         / [sum_{g in R} e^{s(i, l_g)} + sum_{j in L} e^{s_ij}]
// with o_g the softmax-weighted values of block g alone: a softmax over the
// landmarks and the own block's keys, each landmark's share spread over its
// block by that block's own softmax. That is an lse merge in which each
// retrieved block's lse is replaced by its landmark score, so it runs as
// top_k + 1 block-sparse calls (one block per row each) merged by
// merge_states: no kernel of its own. The lse returned is the natural log of
// the grouped denominator. The call's params and masks (causal, windows,
// softcap, ...) apply inside the own block; retrieved blocks, earlier ones,
// are seen whole with the plain scaled score.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "attnkit/attention/attention_args.hpp"
#include "attnkit/attention/check_args.hpp"
#include "attnkit/attention/flash.hpp"
#include "attnkit/attention/merge.hpp"
#include "attnkit/attention/sparse/layout.hpp"
#include "attnkit/core/config.hpp"
#include "attnkit/core/dtype.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// Defaults: the reference code's blocks of 50 keys and 5 retrieved blocks.
struct landmark_options {
  std::int64_t block = 50;  // keys per block
  std::int64_t top_k = 5;   // earlier blocks each query row retrieves
};

namespace detail {

/// The retrieval of a checked call: per query row (sequence, head, row; in the
/// order of owned_layout's lists) its own block and up to top_k retrieved
/// blocks, ascending, with their landmark scores.
struct landmark_retrieval {
  std::int64_t rows = 0, top_k = 0;  // rows = b * hq * most rows
  std::vector<std::int64_t> own, count, ids;  // own, count: (rows); ids: (rows, top_k); own -1: no key
  std::vector<float> logits;                  // (rows, top_k)
};

template <class TQ, class TK, class TV, class TO, class TL>
landmark_retrieval retrieve_blocks(const char* fn, const checked_call& c, const attention_args<TQ, TK, TV, TO>& a,
                                   const tensor_view<TL, 4>& landmarks, const landmark_options& opt) {
  const attention_shape& s = c.s;
  ATTNKIT_CHECK(opt.block >= 1 && opt.block < (std::int64_t{1} << 40), fn, ": options.block must be in [1, 2^40), got ",
                opt.block);
  ATTNKIT_CHECK(opt.top_k >= 0 && opt.top_k < (std::int64_t{1} << 20), fn, ": options.top_k must be in [0, 2^20), got ",
                opt.top_k);
  const std::int64_t blocks = (s.skv + opt.block - 1) / opt.block;
  check_view(fn, "landmarks", landmarks, true);
  check_extent(fn, "landmarks", landmarks, 0, "b", s.b, "the number of sequences");
  check_extent(fn, "landmarks", landmarks, 1, "hkv", s.hkv, "k's heads");
  ATTNKIT_CHECK(landmarks.extent(2) >= blocks, fn, ": landmarks.extent(2) must hold ceil(skv / block) = ", blocks,
                " blocks, got ", landmarks.extent(2));
  check_extent(fn, "landmarks", landmarks, 3, "d", s.d, "q.extent(3)");
  landmark_retrieval r;
  r.rows = s.b * s.hq * s.sq;
  r.top_k = opt.top_k;
  r.own.assign(static_cast<std::size_t>(r.rows), -1);
  r.count.assign(static_cast<std::size_t>(r.rows), 0);
  r.ids.assign(static_cast<std::size_t>(r.rows * opt.top_k), 0);
  r.logits.assign(static_cast<std::size_t>(r.rows * opt.top_k), 0.0f);
  const float scale = a.params.scale ? *a.params.scale : 1.0f / std::sqrt(static_cast<float>(s.d));
  std::vector<float> score(static_cast<std::size_t>(blocks));
  std::vector<std::int64_t> order(static_cast<std::size_t>(blocks));
  for (std::int64_t b = 0; b < s.b; ++b) {
    const std::int64_t len = a.k.is_paged ? a.k.paged.length(b) : s.skv;
    const sequence_span span = c.batch.span(b, len);
    for (std::int64_t h = 0; h < s.hq; ++h)
      for (std::int64_t i = 0; i < c.batch.rows(b) && len > 0; ++i) {
        const std::int64_t row = (b * s.hq + h) * s.sq + i;
        const std::int64_t own = std::clamp<std::int64_t>(span.q_pos + i - span.k_pos, 0, len - 1) / opt.block;
        r.own[static_cast<std::size_t>(row)] = own;
        for (std::int64_t g = 0; g < own; ++g) {
          float dot = 0.0f;
          for (std::int64_t x = 0; x < s.d; ++x)
            dot += to_float(a.q(c.batch.q_batch(b), h, c.batch.row0(b) + i, x)) *
                   to_float(landmarks(b, h / (s.hq / s.hkv), g, x));
          score[static_cast<std::size_t>(g)] = dot * scale;
        }
        const std::int64_t n = std::min(own, opt.top_k);
        std::iota(order.begin(), order.begin() + own, std::int64_t{0});
        std::partial_sort(order.begin(), order.begin() + n, order.begin() + own, [&](std::int64_t u, std::int64_t w) {
          return score[static_cast<std::size_t>(u)] > score[static_cast<std::size_t>(w)] ||
                 (score[static_cast<std::size_t>(u)] == score[static_cast<std::size_t>(w)] && u < w);
        });
        std::sort(order.begin(), order.begin() + n);
        r.count[static_cast<std::size_t>(row)] = n;
        for (std::int64_t x = 0; x < n; ++x) {
          r.ids[static_cast<std::size_t>(row * opt.top_k + x)] = order[static_cast<std::size_t>(x)];
          r.logits[static_cast<std::size_t>(row * opt.top_k + x)] = score[static_cast<std::size_t>(order[static_cast<std::size_t>(x)])];
        }
      }
  }
  return r;
}

/// A layout of one block per row (block_q 1): the own block (rank < 0) or the
/// rank-th retrieved one; rows without one list nothing.
inline owned_layout landmark_rank_layout(const landmark_retrieval& r, const attention_shape& s, std::int64_t block,
                                         std::int64_t rank) {
  owned_layout l;
  l.shape.block_q = 1;
  l.shape.block_k = block;
  l.b = s.b, l.groups = s.hq, l.qblocks = s.sq;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(r.rows)), counts(static_cast<std::size_t>(r.rows));
  for (std::int64_t row = 0; row < r.rows; ++row) {
    const std::size_t x = static_cast<std::size_t>(row);
    const bool has = rank < 0 ? r.own[x] >= 0 : rank < r.count[x];
    counts[x] = has ? 1 : 0;
    ids[x] = !has ? 0 : rank < 0 ? r.own[x] : r.ids[x * static_cast<std::size_t>(r.top_k) + static_cast<std::size_t>(rank)];
  }
  l.set_lists(ids.data(), 1, counts.data());
  return l;
}

}  // namespace detail

/// The blocks each query row attends under landmark retrieval, as a layout
/// (block_q 1, block_k = opt.block): its retrieved blocks and its own block.
/// landmarks: (b, hkv, >= ceil(skv / block), d), one landmark key per block.
template <class TQ, class TK, class TV, class TO, class TL>
owned_layout landmark_layout(const attention_args<TQ, TK, TV, TO>& args, tensor_view<TL, 4> landmarks,
                             const landmark_options& opt = {}) {
  constexpr const char* fn = "landmark_layout";
  const detail::checked_call c = detail::check_args(fn, args, false);
  const detail::landmark_retrieval r = detail::retrieve_blocks(fn, c, args, landmarks, opt);
  owned_layout l;
  l.shape.block_q = 1;
  l.shape.block_k = opt.block;
  l.b = c.s.b, l.groups = c.s.hq, l.qblocks = c.s.sq;
  const std::int64_t width = opt.top_k + 1;
  std::vector<std::int64_t> ids(static_cast<std::size_t>(r.rows * width)), counts(static_cast<std::size_t>(r.rows));
  for (std::int64_t row = 0; row < r.rows; ++row) {
    std::int64_t* list = ids.data() + row * width;
    const std::size_t x = static_cast<std::size_t>(row);
    std::copy_n(r.ids.begin() + row * opt.top_k, r.count[x], list);
    counts[x] = r.count[x];
    if (r.own[x] >= 0) list[counts[x]++] = r.own[x];  // after every retrieved (earlier) block: still ascending
  }
  l.set_lists(ids.data(), width, counts.data());
  return l;
}

/// o (and lse) of args under landmark attention (see the top of this file) on
/// `backend`. args may not carry a layout of its own. Allocates its partial
/// results (two f32 copies of o's shape).
template <class TQ, class TK, class TV, class TO, class TL, class Backend>
void landmark_attention(const attention_args<TQ, TK, TV, TO>& args, tensor_view<TL, 4> landmarks,
                        const landmark_options& opt, const Backend& backend) {
  constexpr const char* fn = "landmark_attention";
  ATTNKIT_CHECK(!args.sparse.given(), fn, ": args.sparse must be unset: the layout comes from the landmarks");
  ATTNKIT_CHECK(!detail::is_given(args.kw), fn, ": key weights are not supported");
  const detail::checked_call c = detail::check_args(fn, args);
  const detail::landmark_retrieval r = detail::retrieve_blocks(fn, c, args, landmarks, opt);
  const std::int64_t nq = args.q.extent(0), hq = c.s.hq, rows = args.q.extent(2), dv = c.s.dv;
  tensor<float, 4> acc({nq, hq, rows, dv}), part({nq, hq, rows, dv});
  tensor<float, 3> acc_lse({nq, hq, rows}), part_lse({nq, hq, rows}), logit({nq, hq, rows});
  attention_args<TQ, TK, TV, float> a;
  a.q = args.q, a.k = args.k, a.v = args.v, a.params = args.params;
  a.cu_seqlens_q = args.cu_seqlens_q, a.q_pos = args.q_pos, a.k_pos = args.k_pos, a.mask = args.mask;
  // The own block with the call's masks, then each rank of retrieved blocks,
  // merged with its lse replaced by the landmark score.
  for (std::int64_t rank = -1; rank < opt.top_k; ++rank) {
    const owned_layout l = detail::landmark_rank_layout(r, c.s, opt.block, rank);
    a.sparse = l.view();
    a.o = rank < 0 ? acc.view() : part.view();
    a.lse = rank < 0 ? acc_lse.view() : part_lse.view();
    if (rank == 0) {  // retrieved blocks are earlier ones, seen whole: the scale is all that applies
      a.params = attention_params{};
      a.params.scale = args.params.scale;
      a.mask = {};
    }
    flash_attention(a, backend);
    if (rank < 0) continue;
    for (std::int64_t b = 0; b < c.s.b; ++b)
      for (std::int64_t h = 0; h < hq; ++h)
        for (std::int64_t i = 0; i < c.batch.rows(b); ++i) {
          const std::size_t row = static_cast<std::size_t>((b * hq + h) * c.s.sq + i);
          logit(c.batch.q_batch(b), h, c.batch.row0(b) + i) =
              rank < r.count[row] ? r.logits[row * static_cast<std::size_t>(r.top_k) + static_cast<std::size_t>(rank)]
                                  : -std::numeric_limits<float>::infinity();
        }
    merge_states(acc.cview(), acc_lse.cview(), part.cview(), logit.cview(), acc.view(), acc_lse.view());
  }
  for (std::int64_t x = 0; x < nq; ++x)
    for (std::int64_t h = 0; h < hq; ++h)
      for (std::int64_t i = 0; i < rows; ++i) {
        for (std::int64_t y = 0; y < dv; ++y) args.o(x, h, i, y) = from_float<TO>(acc(x, h, i, y));
        if (detail::is_given(args.lse)) args.lse(x, h, i) = acc_lse(x, h, i);
      }
}

ATTNKIT_END_NAMESPACE
