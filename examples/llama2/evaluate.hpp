// Eviction quality on the model itself, with no data set: the texts are the
// model's own greedy, full-cache continuations of a few prompts.
//
// Protocol, per text and per (policy, budget): prefill the first `context`
// tokens in one chunk (so prefill-time selection, SnapKV's and the first cut
// of the others, runs on real key weights), then feed the rest one decode step
// at a time, teacher-forced. Scored on the decoded tokens:
//   ppl ratio   exp(mean NLL under the policy - mean NLL under the full cache)
//   agreement   how often the policy's argmax equals the full cache's
//   tokens/s    decode steps per second (the whole model, policy included)
//   mean rows   cache rows per (layer, KV head) after each step, averaged: the
//               memory a policy really holds (SnapKV and Duo's retrieval heads
//               grow past the budget)
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "duo_calibration.hpp"
#include "engine.hpp"
#include "generate.hpp"
#include "tokenizer.hpp"

namespace llama2 {

struct eval_setup {
  std::vector<std::string> prompts{"Once upon a time",
                                   "Lily and Ben went to the park",
                                   "The little dog was sad because",
                                   "One day, a boy named Tim found a box",
                                   "The sun was hot and the cat",
                                   "Mom said, \"Do not touch the cake.\""};
  std::int64_t generated = 480;  // tokens generated per prompt
  std::int64_t context = 128;    // tokens prefilled in one chunk
  std::vector<std::int64_t> budgets{32, 64, 128, 256};
};

/// One teacher-forced run of a text.
struct forced_run {
  double nll = 0;            // summed over the decoded tokens
  std::vector<int> argmax;   // the model's choice at each decoded token
  double seconds = 0, rows = 0;  // decode time; cache rows per (layer, head), summed over steps
  std::int64_t steps = 0;
};

inline forced_run teacher_force(const model& m, const policy_spec& spec, const std::vector<int>& text,
                                std::int64_t context) {
  engine e(m, spec);
  forced_run r;
  std::vector<float> logits = e.forward({text.begin(), text.begin() + context});
  for (std::size_t t = std::size_t(context); t < text.size(); ++t) {
    const float top = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (const float x : logits) sum += std::exp(static_cast<double>(x - top));
    r.nll += std::log(sum) - (logits[text[t]] - top);
    r.argmax.push_back(argmax(logits));
    if (t + 1 == text.size()) break;
    const auto t0 = std::chrono::steady_clock::now();
    logits = e.forward({text[t]});
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::int64_t rows = 0;
    for (int l = 0; l < m.cfg.n_layers; ++l)
      for (int g = 0; g < m.cfg.n_kv_heads; ++g) rows += e.cache(l).index().length(g);
    r.rows += static_cast<double>(rows) / (m.cfg.n_layers * m.cfg.n_kv_heads);
    ++r.steps;
  }
  return r;
}

struct eval_row {
  std::string policy;
  std::int64_t budget = 0;
  double nll = 0, agreement = 0, tokens_per_s = 0, mean_rows = 0, ppl_ratio = 1;
};

/// Runs every policy at every budget over every text and prints the tables
/// (markdown, stdout); writes them as CSV when csv_path is given. Returns 0.
inline int evaluate(const model& m, const tokenizer& tok, const std::string& csv_path, const eval_setup& setup = {}) {
  std::vector<std::vector<int>> texts;
  for (const auto& prompt : setup.prompts) {
    std::vector<int> text = tok.encode(prompt);
    const std::vector<int> more = greedy_continuation(m, text, setup.generated);
    text.insert(text.end(), more.begin(), more.end());
    texts.push_back(std::move(text));
  }
  const attention_profile profile = measure_attention(m, calibration_text(m, tok), setup.budgets);

  // Policies in table order, each with the budgets it runs at.
  std::vector<std::pair<std::string, policy_spec>> runs{{"full", policy_spec{}}};
  for (std::size_t b = 0; b < setup.budgets.size(); ++b) {
    const std::int64_t budget = setup.budgets[b];
    const auto spec = [&](const std::string& name, float alpha = 0.0f) {
      policy_spec s{name, budget, alpha, {}};
      if (name == "duo") s.retrieval = duo_heads::by_sparsity(profile.gates(b), duo_sparsity).retrieval;
      return s;
    };
    for (const auto& [label, s] : std::vector<std::pair<std::string, policy_spec>>{
             {"streaming", spec("streaming")}, {"h2o", spec("h2o")},     {"a2sf a=0.9", spec("a2sf", 0.9f)},
             {"a2sf a=0.99", spec("a2sf", 0.99f)}, {"a2sf a=1", spec("a2sf", 1.0f)}, {"tova", spec("tova")},
             {"snapkv", spec("snapkv")},     {"duo", spec("duo")}})
      runs.emplace_back(label, s);
  }

  std::vector<eval_row> rows;
  std::vector<std::vector<int>> full_argmax;
  double full_nll = 0;
  for (const auto& [label, spec] : runs) {
    eval_row row{label, spec.budget};
    double seconds = 0, agree = 0;
    std::int64_t steps = 0, scored = 0;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      const forced_run r = teacher_force(m, spec, texts[i], setup.context);
      if (label == "full") full_argmax.push_back(r.argmax);
      for (std::size_t t = 0; t < r.argmax.size(); ++t) agree += r.argmax[t] == full_argmax[i][t];
      row.nll += r.nll;
      row.mean_rows += r.rows;
      seconds += r.seconds;
      steps += r.steps;
      scored += static_cast<std::int64_t>(r.argmax.size());
    }
    row.nll /= static_cast<double>(scored);
    if (label == "full") full_nll = row.nll;
    row.ppl_ratio = std::exp(row.nll - full_nll);
    row.agreement = 100.0 * agree / static_cast<double>(scored);
    row.tokens_per_s = static_cast<double>(steps) / seconds;
    row.mean_rows /= static_cast<double>(steps);
    rows.push_back(row);
    std::fprintf(stderr, "%-12s budget %3lld: ppl ratio %.4f\n", label.c_str(), static_cast<long long>(spec.budget),
                 row.ppl_ratio);
  }

  std::printf("%zu texts, %lld tokens each (prompt + %lld generated); %lld prefilled, %lld scored per text.\n\n",
              texts.size(), static_cast<long long>(texts[0].size()), static_cast<long long>(setup.generated),
              static_cast<long long>(setup.context), static_cast<long long>(texts[0].size()) - setup.context);
  std::printf("Full cache: perplexity %.3f.\n\n", std::exp(full_nll));
  std::printf("| policy | budget | ppl ratio | greedy agreement %% | tokens/s | mean KV rows |\n");
  std::printf("|---|---:|---:|---:|---:|---:|\n");
  for (const auto& r : rows)
    std::printf("| %s | %s | %.4f | %.1f | %.0f | %.1f |\n", r.policy.c_str(),
                r.budget ? std::to_string(r.budget).c_str() : "all", r.ppl_ratio, r.agreement, r.tokens_per_s,
                r.mean_rows);

  std::printf("\nAttention per (layer, KV head), per query, on the calibration text (\"%s\" + %lld tokens).\n"
              "dropped(B): the mass outside 4 sinks + the last B - 4 rows, the Duo gate; * = streaming head at B.\n\n",
              calibration_prompt, static_cast<long long>(calibration_tokens));
  std::printf("| layer | kv head | first 4 rows | last 4 rows |");
  for (const auto b : setup.budgets) std::printf(" dropped(%lld) |", static_cast<long long>(b));
  std::printf("\n|---:|---:|---:|---:|");
  for (std::size_t b = 0; b < setup.budgets.size(); ++b) std::printf("---:|");
  std::printf("\n");
  std::vector<duo_heads> duo;
  for (std::size_t b = 0; b < setup.budgets.size(); ++b) duo.push_back(duo_heads::by_sparsity(profile.gates(b), duo_sparsity));
  for (int l = 0; l < profile.layers; ++l)
    for (int g = 0; g < profile.heads; ++g) {
      const std::size_t cell = std::size_t(l) * profile.heads + g;
      std::printf("| %d | %d | %.3f | %.3f |", l, g, profile.first4[cell], profile.last4[cell]);
      for (std::size_t b = 0; b < setup.budgets.size(); ++b)
        std::printf(" %.3f%s |", profile.dropped[b * profile.layers * profile.heads + cell],
                    duo[b].retrieval[cell] ? "" : "*");
      std::printf("\n");
    }

  if (!csv_path.empty()) {
    std::ofstream csv(csv_path);
    csv << "policy,budget,ppl_ratio,greedy_agreement_pct,tokens_per_s,mean_kv_rows,nll_per_token\n";
    for (const auto& r : rows)
      csv << r.policy << ',' << r.budget << ',' << r.ppl_ratio << ',' << r.agreement << ',' << r.tokens_per_s << ','
          << r.mean_rows << ',' << r.nll << '\n';
    if (!csv) throw std::runtime_error("cannot write " + csv_path);
  }
  return 0;
}

}  // namespace llama2
