// 04_sparse: block-sparse attention. A layout says which key blocks each block
// of query rows attends (CSR lists, plus sink keys and a local window every row
// keeps); flash_attention runs it with the same tile body as dense attention,
// visiting only the listed blocks. First a layout built by hand: every block
// listed is exactly dense causal attention. Then HiP builds one from the
// queries and keys, and its output, the share of each row's attention mass
// its layout covers, and its time are compared with dense attention.
//
//   04_sparse [keys] [top_k]      (defaults 4096 and 512)
#include <attnkit/attention/dense.hpp>
#include <attnkit/attention/flash.hpp>
#include <attnkit/attention/sparse/hip.hpp>
#include <attnkit/core/tensor.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

using namespace attnkit;

namespace {

constexpr std::int64_t hq = 8, hkv = 2, d = 64;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double max_diff(const tensor<float, 4>& a, const tensor<float, 4>& b) {
  double m = 0;
  for (std::int64_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(double(a.data()[i]) - b.data()[i]));
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t n = argc > 1 ? std::atoll(argv[1]) : 4096, top_k = argc > 2 ? std::atoll(argv[2]) : 512;
  if (n < 1 || top_k < 1) {
    std::fprintf(stderr, "usage: 04_sparse [keys >= 1] [top_k >= 1]\n");
    return 1;
  }
  // Queries and keys drift slowly along the sequence (unit-variance AR(1)
  // processes), as real ones do: nearby keys score alike, so a block's first key
  // speaks for it, and a block's query rows want alike keys. Queries are scaled
  // up so attention is peaked, as in trained heads.
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const auto drift = [&](tensor<float, 4>& t, float scale) {
    const float rho = 0.995f, step = std::sqrt(1.0f - rho * rho);
    for (std::int64_t h = 0; h < t.extent(1); ++h)
      for (std::int64_t x = 0; x < d; ++x) {
        float walk = normal(rng);
        for (std::int64_t j = 0; j < t.extent(2); ++j) t(0, h, j, x) = scale * (walk = rho * walk + step * normal(rng));
      }
  };
  tensor<float, 4> q({1, hq, n, d}), k({1, hkv, n, d}), v({1, hkv, n, d});
  drift(q, 3.0f);
  drift(k, 1.0f);
  for (std::int64_t i = 0; i < v.size(); ++i) v.data()[i] = normal(rng);
  attention_params causal;
  causal.causal = true;
  tensor<float, 4> dense({1, hq, n, d}), sparse({1, hq, n, d});

  // 1. A layout by hand: blocks of 64 rows and 64 keys; query block qb lists key
  // blocks 0..qb, which is every key a causal row can see.
  const std::int64_t block = 64, blocks = (n + block - 1) / block;
  std::vector<std::int64_t> indptr, indices;
  for (std::int64_t h = 0; h < hq; ++h)
    for (std::int64_t qb = 0; qb <= blocks; ++qb) {
      indptr.push_back(static_cast<std::int64_t>(indices.size()));
      for (std::int64_t kb = 0; kb <= qb && qb < blocks; ++kb) indices.push_back(kb);
    }
  auto args = make_attention_args(q.cview(), k.cview(), v.cview(), sparse.view());
  args.params = causal;
  args.sparse.block_q = block;
  args.sparse.block_k = block;
  args.sparse.indptr = tensor_view<const std::int64_t, 3>(indptr.data(), {1, hq, blocks + 1});
  args.sparse.indices = tensor_view<const std::int64_t, 1>(indices.data(), {static_cast<std::int64_t>(indices.size())});
  flash_attention(args);
  auto t0 = std::chrono::steady_clock::now();
  flash_attention(q.view(), k.view(), v.view(), dense.view(), causal);
  const double dense_s = seconds_since(t0);
  std::printf("hand-built full causal layout: max |sparse - dense| = %.3g over %lld keys\n", max_diff(sparse, dense),
              static_cast<long long>(n));

  // 2. HiP: about top_k keys per block of 64 rows, plus 64 sink keys and a 256-key window.
  hip_options opt;
  opt.top_k = top_k;
  opt.sinks = 64;
  opt.window = 256;
  t0 = std::chrono::steady_clock::now();
  const owned_layout layout = hip_layout(args, opt);
  const double estimate_s = seconds_since(t0);
  args.sparse = layout.view();
  t0 = std::chrono::steady_clock::now();
  flash_attention(args);
  const double attend_s = seconds_since(t0);

  // Attention-mass recall: the share of each row's dense softmax mass on the keys
  // its layout selects, on a sample of rows (dense probabilities of those rows only).
  double recall = 0, err = 0, ref = 0;
  std::int64_t rows = 0;
  const std::int64_t sample = std::min<std::int64_t>(n, 32);
  tensor<float, 4> probs({1, hq, sample, n}), q_rows({1, hq, sample, d}), o_rows({1, hq, sample, d});
  for (std::int64_t h = 0; h < hq; ++h)
    for (std::int64_t r = 0; r < sample; ++r)
      for (std::int64_t x = 0; x < d; ++x) q_rows(0, h, r, x) = q(0, h, n - sample + r, x);
  dense_attention(q_rows.view(), k.view(), v.view(), o_rows.view(), causal, {}, probs.view());
  for (std::int64_t h = 0; h < hq; ++h)
    for (std::int64_t r = 0; r < sample; ++r, ++rows) {
      const std::int64_t i = n - sample + r;
      const std::int64_t *first = layout.first(0, h, i / block), *last = layout.last(0, h, i / block);
      for (std::int64_t j = 0; j <= i; ++j)  // the layout's rule (attention/sparse/layout.hpp)
        if (std::binary_search(first, last, j / block) || j < opt.sinks || i - j < opt.window)
          recall += probs(0, h, r, j);
      for (std::int64_t x = 0; x < d; ++x) {
        err += std::pow(sparse(0, h, i, x) - dense(0, h, i, x), 2.0);
        ref += std::pow(dense(0, h, i, x), 2.0);
      }
    }
  std::printf("HiP top_k %lld: %lld listed blocks, attention-mass recall %.3f, relative error %.3g (last %lld rows)\n",
              static_cast<long long>(top_k), static_cast<long long>(layout.indices.size()), recall / rows,
              std::sqrt(err / ref), static_cast<long long>(sample));
  std::printf("time: HiP estimate %.1f ms + sparse attention %.1f ms vs dense flash %.1f ms\n", 1e3 * estimate_s,
              1e3 * attend_s, 1e3 * dense_s);
  return 0;
}
