// 01_dense: causal grouped-query attention with attnkit::dense_attention.
//
// dense_attention materializes every score, so it is the one to use when you
// want the attention map itself (or an oracle to test a faster kernel against).
// This program builds a tiny GQA problem in BSHD memory (the layout most
// engines keep activations in), runs causal attention, and prints the
// attention map of one head together with its log-sum-exp.
#include <attnkit/attnkit.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  // 4 query heads share 2 KV heads (GQA group of 2); 6 tokens; head dim 16.
  const std::int64_t b = 1, hq = 4, hkv = 2, s = 6, d = 16;

  // Memory is [b][s][h][d]; make_bshd gives the (b, h, s, d) view every kernel takes.
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> q(b * s * hq * d), k(b * s * hkv * d), v(b * s * hkv * d), o(b * s * hq * d);
  for (auto* buf : {&q, &k, &v})
    for (float& x : *buf) x = normal(rng);
  const auto q_view = attnkit::make_bshd(q.data(), b, s, hq, d);   // (b, hq, s, d)
  const auto k_view = attnkit::make_bshd(k.data(), b, s, hkv, d);  // (b, hkv, s, d)
  const auto v_view = attnkit::make_bshd(v.data(), b, s, hkv, d);  // (b, hkv, s, d)
  const auto o_view = attnkit::make_bshd(o.data(), b, s, hq, d);   // (b, hq, s, d)

  // Optional outputs: the log-sum-exp per row and the full probability matrix.
  attnkit::tensor<float, 3> lse({b, hq, s});      // (b, hq, sq)
  attnkit::tensor<float, 4> probs({b, hq, s, s});  // (b, hq, sq, skv)

  attnkit::attention_params params;  // scale defaults to 1/sqrt(d)
  params.causal = true;              // query i sees keys 0..i
  attnkit::dense_attention(q_view, k_view, v_view, o_view, params, lse.view(), probs.view());

  std::printf("attention map of head 1 (rows: queries, columns: keys)\n");
  for (std::int64_t i = 0; i < s; ++i) {
    double row_sum = 0;
    for (std::int64_t j = 0; j < s; ++j) {
      std::printf(" %5.3f", probs(0, 1, i, j));
      row_sum += probs(0, 1, i, j);
    }
    std::printf("   sum %.6f  lse %7.4f\n", row_sum, lse(0, 1, i));
    if (std::abs(row_sum - 1.0) > 1e-5) return 1;  // each row is a distribution
  }
  std::printf("o(head 1, last token)[0..3] = %.4f %.4f %.4f %.4f\n", o_view(0, 1, s - 1, 0),
              o_view(0, 1, s - 1, 1), o_view(0, 1, s - 1, 2), o_view(0, 1, s - 1, 3));

  // Mistakes are reported before anything is written, naming the argument.
  try {
    attnkit::attention_params bad;
    bad.window_left = -1;
    attnkit::dense_attention(q_view, k_view, v_view, o_view, bad);
  } catch (const attnkit::error& e) {
    std::printf("rejected: %s\n", e.what());
  }
  return 0;
}
