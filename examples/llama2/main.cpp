// attnkit_llama2: a tiny Llama-2 inference engine whose attention and KV cache
// are attnkit's (see engine.hpp), on llama2.c checkpoints.
//
// Generation (prints the prompt and the generated text on stdout, like llama2.c):
//   attnkit_llama2 [--model PATH] [--tokenizer PATH] [--steps N] [--temperature T]
//                  [--seed S] [--prompt TEXT | --batch FILE] [--policy NAME --budget N [--alpha A]]
//                  [--kv f32|int8|fp8] [--sparse hip|quest --budget N]
// --batch FILE serves one prompt per line of FILE at once: the sequences share
// one KV pool and decode together, one attention call per layer per step; each
// output (printed in order, one after another) equals that prompt's output alone.
// Evaluation of every eviction policy against the full cache (evaluate.hpp):
//   attnkit_llama2 --eval [--csv PATH] [--model PATH] [--tokenizer PATH]
//
// Defaults: the stories260K model and tokenizer in ../shared/models beside the
// source tree, 256 steps, temperature 1, a time-based seed, the full cache.
// Policies: full, streaming, h2o, a2sf (needs --alpha), tova, snapkv, duo.
// --kv: the cache's storage, f32 (default), int8 (a scale per row) or fp8
// (e4m3); keys and values are quantized as they are appended.
// --sparse: the cache keeps everything and each decode step attends only the
// about N rows HiP or Quest selects (policy.hpp).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <fstream>
#include <iostream>
#include <map>
#include <string>

#include "duo_calibration.hpp"
#include "evaluate.hpp"
#include "generate.hpp"

#ifndef ATTNKIT_LLAMA2_MODELS
#define ATTNKIT_LLAMA2_MODELS "../shared/models"
#endif

namespace {

const char* usage =
    "usage: attnkit_llama2 [--model PATH] [--tokenizer PATH] [--steps N] [--temperature T] [--seed S]\n"
    "                      [--prompt TEXT | --batch FILE] [--policy full|streaming|h2o|a2sf|tova|snapkv|duo]\n"
    "                      [--budget N] [--alpha A] [--kv f32|int8|fp8] [--sparse hip|quest]\n"
    "       attnkit_llama2 --eval [--csv PATH] [--model PATH] [--tokenizer PATH]\n";

/// --name value pairs, and --eval alone.
std::map<std::string, std::string> parse(int argc, char** argv) {
  static const char* valued[] = {"--model", "--tokenizer", "--steps", "--temperature", "--seed", "--prompt",
                                 "--policy", "--budget",   "--alpha", "--csv",   "--batch", "--kv",
                                 "--sparse"};
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--eval") {
      flags[a] = "1";
      continue;
    }
    bool known = false;
    for (const char* v : valued) known |= a == v;
    if (!known || i + 1 >= argc) throw std::invalid_argument(known ? a + " needs a value" : "unknown flag " + a);
    flags[a] = argv[++i];
  }
  return flags;
}

std::string sparse_note(const llama2::policy_spec& s) {
  return s.sparse.empty() ? "" : " + " + s.sparse + " selection of " + std::to_string(s.budget) + " rows";
}

std::string flag(const std::map<std::string, std::string>& f, const std::string& name, const std::string& fallback) {
  const auto it = f.find(name);
  return it == f.end() ? fallback : it->second;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace llama2;
  try {
    const auto flags = parse(argc, argv);
    const model m = load_model(flag(flags, "--model", ATTNKIT_LLAMA2_MODELS "/stories260K.bin"));
    const tokenizer tok(flag(flags, "--tokenizer", ATTNKIT_LLAMA2_MODELS "/tok512.bin"), m.cfg.vocab_size);
    if (flags.count("--eval")) {
      const eval_setup setup;
      print_report(run_evaluation(m, tok, setup), setup, flag(flags, "--csv", ""));
      return 0;
    }

    policy_spec spec;
    spec.name = flag(flags, "--policy", "full");
    spec.budget = std::stoll(flag(flags, "--budget", "0"));
    spec.alpha = std::stof(flag(flags, "--alpha", "0"));
    spec.kv = flag(flags, "--kv", "f32");
    spec.sparse = flag(flags, "--sparse", "");
    if (spec.name == "duo") spec.retrieval = duo_retrieval_heads(m, tok, spec.budget);
    if (spec.kv == "fp8") calibrate_fp8(m, tok, spec);
    const float temperature = std::stof(flag(flags, "--temperature", "1"));
    if (!(temperature >= 0.0f)) throw std::invalid_argument("--temperature must be >= 0");
    const auto seed = std::stoull(flag(flags, "--seed", std::to_string(std::time(nullptr))));
    std::int64_t steps = std::stoll(flag(flags, "--steps", "256"));
    if (steps <= 0 || steps > m.cfg.seq_len) steps = m.cfg.seq_len;  // as llama2.c does
    const std::vector<int> prompt = tok.encode(flag(flags, "--prompt", ""));
    if (static_cast<std::int64_t>(prompt.size()) > m.cfg.seq_len)
      throw std::invalid_argument("the prompt has more tokens than the model's context");

    if (flags.count("--batch")) {
      std::ifstream file(flag(flags, "--batch", ""));
      if (!file) throw std::invalid_argument("cannot read the --batch file");
      std::vector<std::vector<int>> prompts;
      for (std::string line; std::getline(file, line);) {
        prompts.push_back(tok.encode(line));
        if (static_cast<std::int64_t>(prompts.back().size()) > m.cfg.seq_len)
          throw std::invalid_argument("a prompt has more tokens than the model's context");
      }
      if (prompts.empty()) throw std::invalid_argument("the --batch file holds no prompt");
      engine e(m, spec, {}, static_cast<std::int64_t>(prompts.size()));
      std::vector<sampler> samplers(prompts.size(), sampler(temperature, seed));
      const std::vector<generation> all = generate_batch(e, tok, prompts, steps, samplers);
      std::int64_t generated = 0;
      for (const generation& g : all) {
        std::cout << g.text << '\n';
        generated += static_cast<std::int64_t>(g.tokens.size()) - g.prompt_tokens;
      }
      std::fprintf(stderr, "policy %s%s, kv %s, seed %llu: %zu sequences, %lld generated tokens, %.0f tok/s decode\n",
                   spec.name.c_str(), sparse_note(spec).c_str(), spec.kv.c_str(), static_cast<unsigned long long>(seed), all.size(),
                   static_cast<long long>(generated), generated / std::max(all[0].decode_seconds, 1e-9));
      return 0;
    }

    engine e(m, spec);
    sampler sample(temperature, seed);
    const generation g = generate(e, tok, prompt, steps, sample);
    std::cout << g.text << '\n';
    const auto generated = static_cast<std::int64_t>(g.tokens.size()) - g.prompt_tokens;
    std::fprintf(stderr, "policy %s%s, kv %s, seed %llu: %lld prompt + %lld generated tokens, %.0f tok/s decode\n",
                 spec.name.c_str(), sparse_note(spec).c_str(), spec.kv.c_str(), static_cast<unsigned long long>(seed),
                 static_cast<long long>(g.prompt_tokens),
                 static_cast<long long>(generated), generated / std::max(g.decode_seconds, 1e-9));
    return 0;
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "attnkit_llama2: %s\n%s", ex.what(), usage);
    return 2;
  }
}
