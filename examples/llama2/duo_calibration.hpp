// DuoAttention's gates, measured instead of trained.
//
// DuoAttention trains one gate per (layer, KV head): how much the model's
// output needs that head's full cache rather than sinks plus a recent window.
// Here the gate is measured on calibration text the model writes itself
// (greedy, full cache, from calibration_prompt): the attention mass a head's
// queries put on the rows a streaming head of budget B would have dropped
// (past the first 4, before the last B - 4 and the new token), averaged over
// the text's queries and the KV head's query group. The half of the (layer,
// KV head) pairs with the lowest gates stream (sparsity 0.5, DuoAttention's
// setting for GQA models); ties go to the lower index.
#pragma once

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine.hpp"
#include "generate.hpp"
#include "tokenizer.hpp"

namespace llama2 {

inline const char* const calibration_prompt = "There was a big tree in the garden";
constexpr std::int64_t calibration_tokens = 480;
constexpr double duo_sparsity = 0.5;

/// Where each (layer, KV head)'s queries put their attention, per query, averaged.
struct attention_profile {
  int layers = 0, heads = 0;
  std::vector<std::int64_t> budgets;
  std::vector<double> first4, last4;  // (layers, heads): mass on the first 4 / the newest 4 rows
  std::vector<double> dropped;        // (budgets, layers, heads): mass outside a streaming head's rows
  double uniform4 = 0;                // the first 4 rows' share under uniform attention

  duo_gates gates(std::size_t budget_index) const {
    const auto at = dropped.begin() + static_cast<std::ptrdiff_t>(budget_index * layers * heads);
    return duo_gates(layers, heads, std::vector<float>(at, at + layers * heads));
  }
};

/// Runs text through the model one token at a time with the full cache and
/// records every layer's attention.
inline attention_profile measure_attention(const model& m, const std::vector<int>& text,
                                           const std::vector<std::int64_t>& budgets) {
  const config& c = m.cfg;
  attention_profile p{c.n_layers, c.n_kv_heads, budgets, {}, {}, {}};
  const std::size_t cells = std::size_t(c.n_layers) * c.n_kv_heads;
  p.first4.assign(cells, 0.0);
  p.last4.assign(cells, 0.0);
  p.dropped.assign(budgets.size() * cells, 0.0);
  const double group = c.n_heads / c.n_kv_heads;
  engine e(m, policy_spec{}, [&](int l, const token_index& index, tensor_view<const float, 2> w) {
    const std::int64_t n = index.length(0);  // rows 0 .. n-1; the newest token is row n-1
    if (l == 0) p.uniform4 += static_cast<double>(std::min<std::int64_t>(n, 4)) / static_cast<double>(n);
    for (int g = 0; g < c.n_kv_heads; ++g) {
      const std::size_t cell = std::size_t(l) * c.n_kv_heads + g;
      for (std::int64_t j = 0; j < n; ++j) {
        const double mass = w(g, j) / group;
        if (j < 4) p.first4[cell] += mass;
        if (j >= n - 4) p.last4[cell] += mass;
        for (std::size_t b = 0; b < budgets.size(); ++b) {
          const std::int64_t recent = budgets[b] - policy_spec::sinks;
          if (j >= policy_spec::sinks && j < n - 1 - recent) p.dropped[b * cells + cell] += mass;
        }
      }
    }
  });
  for (const int t : text) e.forward({t});
  const double queries = static_cast<double>(text.size());
  for (auto* v : {&p.first4, &p.last4, &p.dropped})
    for (double& x : *v) x /= queries;
  p.uniform4 /= queries;
  return p;
}

/// The calibration text: the calibration prompt and the model's continuation.
inline std::vector<int> calibration_text(const model& m, const tokenizer& tok) {
  std::vector<int> text = tok.encode(calibration_prompt);
  const std::vector<int> more = greedy_continuation(m, text, calibration_tokens);
  text.insert(text.end(), more.begin(), more.end());
  return text;
}

/// fp8 e4m3 scales per (layer, KV head), as engines calibrate them: the
/// largest |k| and |v| over the calibration text (full f32 cache, one
/// prefill) mapped onto e4m3's largest value, 448.
inline void calibrate_fp8(const model& m, const tokenizer& tok, policy_spec& spec) {
  engine e(m, policy_spec{});
  e.forward(calibration_text(m, tok));
  const auto [k, v] = e.kv_absmax();
  spec.k_scales = k;
  spec.v_scales = v;
  for (float& x : spec.k_scales) x = std::max(x / 448.0f, 1e-30f);
  for (float& x : spec.v_scales) x = std::max(x / 448.0f, 1e-30f);
}

/// The retrieval flags (layers, KV heads) for budget B by the rule above.
inline std::vector<char> duo_retrieval_heads(const model& m, const tokenizer& tok, std::int64_t budget) {
  if (budget <= policy_spec::sinks || budget >= m.cfg.seq_len)
    throw std::invalid_argument("--budget must be in (" + std::to_string(policy_spec::sinks) + ", " +
                                std::to_string(m.cfg.seq_len) + ") for policy duo");
  const attention_profile p = measure_attention(m, calibration_text(m, tok), {budget});
  return duo_heads::by_sparsity(p.gates(0), duo_sparsity).retrieval;
}

}  // namespace llama2
