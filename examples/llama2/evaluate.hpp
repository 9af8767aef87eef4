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

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
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
  std::vector<std::string> kv_types{"f32", "int8", "fp8"};  // every run once per cache storage type
};

/// One teacher-forced run of a text.
struct forced_run {
  double nll = 0;            // summed over the decoded tokens
  std::vector<int> argmax;   // the model's choice at each decoded token
  double seconds = 0, rows = 0;  // decode time; cache rows per (layer, head), summed over steps
  std::int64_t steps = 0;
};

/// Prefills text[0, context), then feeds the rest one token per decode step;
/// at_end sees the engine after the last step.
inline forced_run teacher_force(const model& m, const policy_spec& spec, const std::vector<int>& text,
                                std::int64_t context, const std::function<void(const engine&)>& at_end = {}) {
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
      for (int g = 0; g < m.cfg.n_kv_heads; ++g) rows += e.index(l).length(g);
    r.rows += static_cast<double>(rows) / (m.cfg.n_layers * m.cfg.n_kv_heads);
    ++r.steps;
  }
  if (at_end) at_end(e);
  return r;
}

struct eval_row {
  std::string policy;
  std::int64_t budget = 0;  // 0: full cache
  std::string kv;           // the cache's storage type
  double nll = 0;           // per scored token
  double ppl_ratio = 1, agreement = 0, tokens_per_s = 0, mean_rows = 0;
};

/// A token H2O keeps beyond its recent window: how often, against how common it is.
struct heavy_hitter {
  std::string piece;
  double kept_share = 0, text_share = 0;
};

struct eval_report {
  std::vector<std::vector<int>> texts;
  std::vector<eval_row> rows;
  attention_profile profile;
  std::vector<heavy_hitter> h2o_kept;  // at the smallest budget, most kept first
};

/// The policies in table order, each at every budget, the whole list once per
/// cache storage type (f32 first: the reference), then (f32 only) HiP and
/// Quest selection over the full cache at each budget; Duo's heads come from
/// the profile, fp8's scales from `fp8` (calibrate_fp8).
inline std::vector<std::pair<std::string, policy_spec>> eval_policies(const eval_setup& setup,
                                                                      const attention_profile& profile,
                                                                      const policy_spec& fp8) {
  const std::vector<std::pair<std::string, float>> policies{
      {"streaming", 0.0f}, {"h2o", 0.0f},  {"a2sf-0.9", 0.9f}, {"a2sf-0.99", 0.99f},
      {"a2sf-1", 1.0f},    {"tova", 0.0f}, {"snapkv", 0.0f},   {"duo", 0.0f}};
  std::vector<std::pair<std::string, policy_spec>> runs;
  for (const std::string& kv : setup.kv_types) {
    policy_spec full;
    full.kv = kv;
    if (kv == "fp8") full.k_scales = fp8.k_scales, full.v_scales = fp8.v_scales;
    runs.emplace_back("full", full);
    for (const auto& [label, alpha] : policies)
      for (std::size_t b = 0; b < setup.budgets.size(); ++b) {
        policy_spec s{label.substr(0, label.find('-')), setup.budgets[b], alpha, {}, kv, full.k_scales, full.v_scales};
        if (s.name == "duo") s.retrieval = duo_heads::by_sparsity(profile.gates(b), duo_sparsity).retrieval;
        runs.emplace_back(label, s);
      }
    if (kv != "f32") continue;
    for (const std::string selector : {"hip", "quest"})  // dynamic selection over the full cache
      for (const std::int64_t budget : setup.budgets) {
        policy_spec s = full;
        s.budget = budget;
        s.sparse = selector;
        runs.emplace_back(selector, s);
      }
  }
  return runs;
}

/// Counts the tokens H2O holds outside its recent window once a text is done.
inline std::vector<heavy_hitter> rank_kept_tokens(const std::map<int, double>& kept, const std::map<int, double>& seen,
                                                  const tokenizer& tok, std::size_t top) {
  double kept_total = 0, seen_total = 0;
  for (const auto& [t, n] : kept) kept_total += n;
  for (const auto& [t, n] : seen) seen_total += n;
  std::vector<heavy_hitter> out;
  for (const auto& [t, n] : kept)
    out.push_back({t == tokenizer::bos ? "<s> (BOS)" : tok.decode(0, t), n / kept_total, seen.at(t) / seen_total});
  std::sort(out.begin(), out.end(), [](const heavy_hitter& a, const heavy_hitter& b) { return a.kept_share > b.kept_share; });
  if (out.size() > top) out.resize(top);
  return out;
}

/// Every policy at every budget over every text (the protocol above).
inline eval_report run_evaluation(const model& m, const tokenizer& tok, const eval_setup& setup = {}) {
  eval_report rep;
  for (const auto& prompt : setup.prompts) {
    std::vector<int> text = tok.encode(prompt);
    const std::vector<int> more = greedy_continuation(m, text, setup.generated);
    text.insert(text.end(), more.begin(), more.end());
    rep.texts.push_back(std::move(text));
  }
  rep.profile = measure_attention(m, calibration_text(m, tok), setup.budgets);

  std::vector<std::vector<int>> full_argmax;
  std::map<int, double> kept, seen;  // H2O's rows past its window, and every token it could have kept
  policy_spec fp8;
  calibrate_fp8(m, tok, fp8);
  for (const auto& [label, spec] : eval_policies(setup, rep.profile, fp8)) {
    eval_row row{label, spec.budget, spec.kv};
    double seconds = 0, agree = 0;
    std::int64_t steps = 0, scored = 0;
    const bool reference = label == "full" && rep.rows.empty();  // the f32 full cache
    const bool count_kept = label == "h2o" && spec.budget == setup.budgets.front() && spec.kv == "f32";
    const std::int64_t recent = spec.budget / 2;  // a plain local: C++17 lambdas cannot capture a binding
    for (std::size_t i = 0; i < rep.texts.size(); ++i) {
      const std::vector<int>& text = rep.texts[i];
      const auto count = [&](const engine& e) {
        for (int l = 0; l < m.cfg.n_layers; ++l)
          for (int g = 0; g < m.cfg.n_kv_heads; ++g) {
            const token_index& index = e.index(l);
            for (std::int64_t j = 0; j < index.length(g) - recent; ++j) kept[text[index.position(g, j)]] += 1;
            for (std::int64_t p = 0; p < index.seen() - recent; ++p) seen[text[p]] += 1;
          }
      };
      const forced_run r =
          teacher_force(m, spec, text, setup.context, count_kept ? std::function<void(const engine&)>(count) : nullptr);
      if (reference) full_argmax.push_back(r.argmax);
      for (std::size_t t = 0; t < r.argmax.size(); ++t) agree += r.argmax[t] == full_argmax[i][t];
      row.nll += r.nll;
      row.mean_rows += r.rows;
      seconds += r.seconds;
      steps += r.steps;
      scored += static_cast<std::int64_t>(r.argmax.size());
    }
    row.nll /= static_cast<double>(scored);
    row.ppl_ratio = std::exp(row.nll - (rep.rows.empty() ? row.nll : rep.rows.front().nll));
    row.agreement = 100.0 * agree / static_cast<double>(scored);
    row.tokens_per_s = static_cast<double>(steps) / seconds;
    row.mean_rows /= static_cast<double>(steps);
    rep.rows.push_back(row);
  }
  rep.h2o_kept = rank_kept_tokens(kept, seen, tok, 8);
  return rep;
}

/// The report as markdown (stdout) and, when csv_path is given, the table as CSV.
inline void print_report(const eval_report& rep, const eval_setup& setup, const std::string& csv_path) {
  const auto n = static_cast<long long>(rep.texts[0].size());
  std::printf("%zu texts of %lld tokens (prompt + %lld generated); %lld prefilled, %lld scored each.\n\n",
              rep.texts.size(), n, static_cast<long long>(setup.generated), static_cast<long long>(setup.context),
              n - static_cast<long long>(setup.context));
  std::printf("Full cache: perplexity %.3f.\n\n", std::exp(rep.rows.front().nll));
  std::printf("Ratios and agreement are against the f32 full cache; int8 and fp8 caches quantize on append.\n\n");
  std::printf("| kv | policy | budget | ppl ratio | greedy agreement %% | tokens/s | mean KV rows |\n");
  std::printf("|---|---|---:|---:|---:|---:|---:|\n");
  for (const auto& r : rep.rows)
    std::printf("| %s | %s | %s | %.4f | %.1f | %.0f | %.1f |\n", r.kv.c_str(), r.policy.c_str(),
                r.budget ? std::to_string(r.budget).c_str() : "all", r.ppl_ratio, r.agreement, r.tokens_per_s,
                r.mean_rows);

  const attention_profile& p = rep.profile;
  std::printf("\nAttention per (layer, KV head), per query, on the calibration text (\"%s\" + %lld tokens).\n"
              "A query spreading its attention evenly would put %.3f on the first 4 rows. "
              "dropped(B): mass outside 4 sinks + the last B - 4 rows + the new token, the Duo gate; "
              "* = a streaming head at B.\n\n",
              calibration_prompt, static_cast<long long>(calibration_tokens), p.uniform4);
  std::printf("| layer | kv head | first 4 rows | newest 4 rows |");
  for (const auto b : p.budgets) std::printf(" dropped(%lld) |", static_cast<long long>(b));
  std::printf("\n|---:|---:|---:|---:|");
  for (std::size_t b = 0; b < p.budgets.size(); ++b) std::printf("---:|");
  std::printf("\n");
  const std::size_t cells = std::size_t(p.layers) * p.heads;
  std::vector<duo_heads> duo;
  for (std::size_t b = 0; b < p.budgets.size(); ++b) duo.push_back(duo_heads::by_sparsity(p.gates(b), duo_sparsity));
  for (std::size_t cell = 0; cell < cells; ++cell) {
    std::printf("| %zu | %zu | %.3f | %.3f |", cell / p.heads, cell % p.heads, p.first4[cell], p.last4[cell]);
    for (std::size_t b = 0; b < p.budgets.size(); ++b)
      std::printf(" %.3f%s |", p.dropped[b * cells + cell], duo[b].retrieval[cell] ? "" : "*");
    std::printf("\n");
  }

  std::printf("\nTokens H2O (budget %lld) holds beyond its recent window at the end of each text, all layers and "
              "heads:\n\n| token | share of those rows | share of the text |\n|---|---:|---:|\n",
              static_cast<long long>(setup.budgets.front()));
  for (const auto& h : rep.h2o_kept) {
    std::string shown;
    for (const char ch : h.piece) shown += ch == '\n' ? std::string("\\n") : ch == '|' ? std::string("\\|") : std::string(1, ch);
    std::printf("| `%s` | %.3f | %.3f |\n", shown.c_str(), h.kept_share, h.text_share);
  }

  if (csv_path.empty()) return;
  std::ofstream csv(csv_path);
  csv << "policy,budget,ppl_ratio,greedy_agreement_pct,tokens_per_s,mean_kv_rows,nll_per_token,kv\n";
  for (const auto& r : rep.rows)
    csv << r.policy << ',' << r.budget << ',' << r.ppl_ratio << ',' << r.agreement << ','
        << r.tokens_per_s << ',' << r.mean_rows << ',' << r.nll << ',' << r.kv << '\n';
  if (!csv) throw std::runtime_error("cannot write " + csv_path);
}

}  // namespace llama2
