// Text generation as llama2.c's run.c does it: the prompt's tokens are printed
// as they are consumed, then each sampled token, until `steps` tokens (prompt
// included) or the model emits BOS. The prompt goes through the model in one
// prefill chunk; each new token is one decode step.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "engine.hpp"
#include "tokenizer.hpp"

namespace llama2 {

inline int argmax(const std::vector<float>& logits) {
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());  // first of equals
}

/// Greedy at temperature 0; else a draw from softmax(logits / temperature).
class sampler {
 public:
  sampler(float temperature, std::uint64_t seed) : temperature_(temperature), rng_(seed) {}

  int operator()(const std::vector<float>& logits) {
    if (temperature_ == 0.0f) return argmax(logits);
    const float top = *std::max_element(logits.begin(), logits.end());
    std::vector<double> p(logits.size());
    double sum = 0;
    for (std::size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp((logits[i] - top) / temperature_);
    double u = std::uniform_real_distribution<double>(0.0, sum)(rng_);
    for (std::size_t i = 0; i < p.size(); ++i)
      if ((u -= p[i]) < 0) return static_cast<int>(i);
    return static_cast<int>(p.size() - 1);
  }

 private:
  float temperature_;
  std::mt19937_64 rng_;
};

struct generation {
  std::vector<int> tokens;  // the prompt's, then the generated ones
  std::string text;         // what is printed: every token after BOS
  std::int64_t prompt_tokens = 0;
  double decode_seconds = 0;
};

/// Runs `prompt` then generates up to `steps` tokens in all (llama2.c's count).
inline generation generate(engine& e, const tokenizer& tok, const std::vector<int>& prompt, std::int64_t steps,
                           sampler& sample) {
  generation g;
  g.tokens = prompt;
  g.prompt_tokens = static_cast<std::int64_t>(prompt.size());
  for (std::size_t i = 1; i < prompt.size() && static_cast<std::int64_t>(i) <= steps; ++i)
    g.text += tok.decode(prompt[i - 1], prompt[i]);
  std::vector<float> logits = e.forward(prompt);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::int64_t pos = g.prompt_tokens - 1; pos < steps;) {
    const int next = sample(logits);
    ++pos;
    if (next == tokenizer::bos) break;
    g.text += tok.decode(g.tokens.back(), next);
    g.tokens.push_back(next);
    if (pos < steps) logits = e.forward({next});
  }
  g.decode_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return g;
}

/// generate() for several prompts at once: every sequence of the engine (one
/// per prompt) advances in the same forward step, and each sequence stops on
/// its own. samplers[s] draws sequence s's tokens, so each output equals the
/// output of generate() on that prompt alone with that sampler.
inline std::vector<generation> generate_batch(engine& e, const tokenizer& tok,
                                              const std::vector<std::vector<int>>& prompts, std::int64_t steps,
                                              std::vector<sampler>& samplers) {
  const std::size_t n = prompts.size();
  std::vector<generation> g(n);
  std::vector<std::int64_t> pos(n);
  std::vector<std::vector<int>> chunks = prompts;
  for (std::size_t s = 0; s < n; ++s) {
    g[s].tokens = prompts[s];
    g[s].prompt_tokens = static_cast<std::int64_t>(prompts[s].size());
    for (std::size_t i = 1; i < prompts[s].size() && static_cast<std::int64_t>(i) <= steps; ++i)
      g[s].text += tok.decode(prompts[s][i - 1], prompts[s][i]);
    pos[s] = g[s].prompt_tokens - 1;
  }
  std::vector<std::vector<float>> logits = e.forward_batch(chunks);
  const auto t0 = std::chrono::steady_clock::now();
  for (bool running = true; running;) {
    running = false;
    for (std::size_t s = 0; s < n; ++s) {
      const bool was_running = !chunks[s].empty();
      chunks[s].clear();
      if (!was_running || pos[s] >= steps) continue;
      const int next = samplers[s](logits[s]);
      ++pos[s];
      if (next == tokenizer::bos) continue;
      g[s].text += tok.decode(g[s].tokens.back(), next);
      g[s].tokens.push_back(next);
      if (pos[s] < steps) chunks[s] = {next}, running = true;
    }
    if (running) logits = e.forward_batch(chunks);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (generation& x : g) x.decode_seconds = seconds;
  return g;
}

/// The n tokens the model continues `prompt` with under greedy decoding and the
/// full cache; BOS does not stop it (it separates stories, and the text goes on).
inline std::vector<int> greedy_continuation(const model& m, const std::vector<int>& prompt, std::int64_t n) {
  engine e(m, policy_spec{});
  std::vector<int> out;
  std::vector<float> logits = e.forward(prompt);
  while (static_cast<std::int64_t>(out.size()) < n) {
    out.push_back(argmax(logits));
    if (static_cast<std::int64_t>(out.size()) < n) logits = e.forward({out.back()});
  }
  return out;
}

}  // namespace llama2
