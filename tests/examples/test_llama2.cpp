// The llama2 example engine against an independent fp64 forward pass on the
// real stories260K model: with the full cache, and under StreamingLLM with
// positions in the cache. Skipped, with a message, when the model is absent.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <algorithm>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "llama2/evaluate.hpp"
#include "llama2/generate.hpp"
#include "support/seeded.hpp"

namespace {

using namespace llama2;

const std::string models = ATTNKIT_LLAMA2_MODELS;

bool have_model() { return std::ifstream(models + "/stories260K.bin").good() && std::ifstream(models + "/tok512.bin").good(); }

#define REQUIRE_MODEL() \
  if (!have_model()) GTEST_SKIP() << "stories260K not found in " << models << " (set ATTNKIT_LLAMA2_MODELS)"

/// Llama-2 in fp64, one token at a time, from the weights and run.c's
/// conventions alone. Each step names the earlier tokens its attention sees
/// and the positions their keys and the query are rotated by.
class fp64_llama {
 public:
  explicit fp64_llama(const model& m) : m_(m), k_(m.cfg.n_layers), v_(m.cfg.n_layers) {}

  std::vector<double> step(int token, const std::vector<int>& visible, const std::vector<double>& key_pos,
                           double q_pos) {
    const config& c = m_.cfg;
    const int dim = c.dim, kv = c.kv_dim(), hs = c.head_size(), group = c.n_heads / c.n_kv_heads;
    std::vector<double> x(m_.w.token_embedding + std::size_t(token) * dim, m_.w.token_embedding + std::size_t(token + 1) * dim);
    for (int l = 0; l < c.n_layers; ++l) {
      const std::vector<double> xb = rmsnorm(x, m_.w.rms_att + std::size_t(l) * dim);
      const std::vector<double> q = matvec(m_.w.wq + std::size_t(l) * dim * dim, xb, dim);
      const std::vector<double> k = matvec(m_.w.wk + std::size_t(l) * kv * dim, xb, kv);
      const std::vector<double> v = matvec(m_.w.wv + std::size_t(l) * kv * dim, xb, kv);
      k_[l].push_back(k);  // before RoPE: each step rotates keys to the positions it is given
      v_[l].push_back(v);
      std::vector<double> o(dim, 0.0);
      for (int h = 0; h < c.n_heads; ++h) {
        const int g = h / group;
        std::vector<double> qh(q.begin() + h * hs, q.begin() + (h + 1) * hs);
        rotate(qh, q_pos);
        std::vector<double> s(visible.size());
        double top = -INFINITY, sum = 0;
        for (std::size_t i = 0; i < visible.size(); ++i) {
          std::vector<double> kh(k_[l][visible[i]].begin() + g * hs, k_[l][visible[i]].begin() + (g + 1) * hs);
          rotate(kh, key_pos[i]);
          s[i] = 0;
          for (int x = 0; x < hs; ++x) s[i] += qh[x] * kh[x] / std::sqrt(double(hs));
          top = std::max(top, s[i]);
        }
        for (double& e : s) sum += e = std::exp(e - top);
        for (std::size_t i = 0; i < visible.size(); ++i)
          for (int x = 0; x < hs; ++x) o[h * hs + x] += s[i] / sum * v_[l][visible[i]][g * hs + x];
      }
      add(x, matvec(m_.w.wo + std::size_t(l) * dim * dim, o, dim));
      const std::vector<double> xf = rmsnorm(x, m_.w.rms_ffn + std::size_t(l) * dim);
      std::vector<double> a = matvec(m_.w.w1 + std::size_t(l) * c.hidden_dim * dim, xf, c.hidden_dim);
      const std::vector<double> b = matvec(m_.w.w3 + std::size_t(l) * c.hidden_dim * dim, xf, c.hidden_dim);
      for (int i = 0; i < c.hidden_dim; ++i) a[i] = a[i] / (1.0 + std::exp(-a[i])) * b[i];
      add(x, matvec(m_.w.w2 + std::size_t(l) * dim * c.hidden_dim, a, dim));
    }
    return matvec(m_.w.classifier, rmsnorm(x, m_.w.rms_final), c.vocab_size);
  }

 private:
  static std::vector<double> rmsnorm(const std::vector<double>& x, const float* g) {
    double ss = 0;
    for (const double e : x) ss += e * e;
    const double inv = 1.0 / std::sqrt(ss / double(x.size()) + 1e-5);
    std::vector<double> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * g[i];
    return out;
  }
  static std::vector<double> matvec(const float* w, const std::vector<double>& x, int rows) {
    std::vector<double> out(rows, 0.0);
    for (int r = 0; r < rows; ++r)
      for (std::size_t c = 0; c < x.size(); ++c) out[r] += double(w[r * x.size() + c]) * x[c];
    return out;
  }
  static void add(std::vector<double>& x, const std::vector<double>& y) {
    for (std::size_t i = 0; i < x.size(); ++i) x[i] += y[i];
  }
  /// Interleaved pairs (2i, 2i+1) turn by pos * 10000^(-2i / head_size).
  void rotate(std::vector<double>& x, double pos) const {
    for (std::size_t i = 0; 2 * i < x.size(); ++i) {
      const double a = pos * std::pow(10000.0, -2.0 * double(i) / double(x.size()));
      const double x0 = x[2 * i], x1 = x[2 * i + 1];
      x[2 * i] = x0 * std::cos(a) - x1 * std::sin(a);
      x[2 * i + 1] = x0 * std::sin(a) + x1 * std::cos(a);
    }
  }

  const model& m_;
  std::vector<std::vector<std::vector<double>>> k_, v_;  // (layers, tokens, kv_dim)
};

double relative_error(const std::vector<float>& got, const std::vector<double>& ref) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    diff += std::pow(got[i] - ref[i], 2.0);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff / norm);
}

std::vector<int> random_tokens(std::mt19937_64& rng, int n) {
  std::vector<int> t{tokenizer::bos};
  std::uniform_int_distribution<int> pick(tokenizer::first_byte_token + 256, 511);  // pieces, not bytes
  while (static_cast<int>(t.size()) < n) t.push_back(pick(rng));
  return t;
}

TEST(Llama2, FullCacheMatchesFp64ForwardInPrefillAndDecode) {
  REQUIRE_MODEL();
  attnkit::test::seeded_rng s;
  const model m = load_model(models + "/stories260K.bin");
  const std::vector<int> tokens = random_tokens(s.rng, 90);
  const int prefill = 37;  // one chunk, then one token per decode step
  engine e(m, policy_spec{});
  fp64_llama ref(m);
  std::vector<int> visible;
  std::vector<double> pos;
  for (int t = 0; t < static_cast<int>(tokens.size()); ++t) {
    visible.push_back(t);
    pos.push_back(t);
    const std::vector<double> want = ref.step(tokens[t], visible, pos, t);
    if (t + 1 < prefill) continue;
    const std::vector<float>& got =
        t + 1 == prefill ? e.forward({tokens.begin(), tokens.begin() + prefill}) : e.forward({tokens[t]});
    EXPECT_LT(relative_error(got, want), 2e-5) << "token " << t;
  }
}

TEST(Llama2, StreamingMatchesFp64ForwardAtCachePositions) {
  REQUIRE_MODEL();
  attnkit::test::seeded_rng s;
  const model m = load_model(models + "/stories260K.bin");
  const std::vector<int> tokens = random_tokens(s.rng, 120);
  const std::int64_t budget = 24, sinks = policy_spec::sinks, recent = budget - sinks;
  engine e(m, policy_spec{"streaming", budget, 0.0f, {}});
  fp64_llama ref(m);
  for (int t = 0; t < static_cast<int>(tokens.size()); ++t) {
    // What the cache holds when token t attends: the sinks, the last `recent`
    // rows and t itself, each key at its row in the cache, the query at the last row.
    std::vector<int> visible;
    std::vector<double> pos;
    for (int j = 0; j <= t; ++j)
      if (j < sinks || j >= t - recent) {
        visible.push_back(j);
        pos.push_back(static_cast<double>(pos.size()));
      }
    const std::vector<double> want = ref.step(tokens[t], visible, pos, pos.back());
    EXPECT_LT(relative_error(e.forward({tokens[t]}), want), 2e-5) << "token " << t;
    EXPECT_EQ(e.index(0).length(0), std::min<std::int64_t>(t + 1, budget));
  }
}

TEST(Llama2, SelectionOverEveryRowIsTheFullCache) {
  // With a budget past every row, HiP's and Quest's layouts list all the cache
  // holds: each decode step's logits equal the full cache's.
  REQUIRE_MODEL();
  attnkit::test::seeded_rng s;
  const model m = load_model(models + "/stories260K.bin");
  const std::vector<int> tokens = random_tokens(s.rng, 100);
  for (const std::string selector : {"hip", "quest"}) {
    policy_spec spec;
    spec.budget = 480;
    spec.sparse = selector;
    engine full(m, policy_spec{}), sparse(m, spec);
    std::vector<float> want = full.forward({tokens.begin(), tokens.begin() + 20});
    std::vector<float> got = sparse.forward({tokens.begin(), tokens.begin() + 20});
    for (std::size_t t = 20; t < tokens.size(); ++t) {
      want = full.forward({tokens[t]});
      got = sparse.forward({tokens[t]});
      double err = 0, norm = 0;
      for (std::size_t x = 0; x < want.size(); ++x) err += std::pow(got[x] - want[x], 2.0), norm += std::pow(want[x], 2.0);
      EXPECT_LT(std::sqrt(err / norm), 1e-5) << selector << " token " << t;
    }
  }
}

TEST(Llama2, GreedyGenerationStopsAtStepsAndPrintsThePrompt) {
  REQUIRE_MODEL();
  const model m = load_model(models + "/stories260K.bin");
  const tokenizer tok(models + "/tok512.bin", m.cfg.vocab_size);
  const std::vector<int> prompt = tok.encode("Lily and Ben");
  engine e(m, policy_spec{});
  sampler greedy(0.0f, 0);
  const generation g = generate(e, tok, prompt, 40, greedy);
  EXPECT_EQ(g.text.rfind("Lily and Ben", 0), 0u) << g.text;
  EXPECT_EQ(g.tokens.size(), 40u + 1u);  // BOS + 40 steps, as llama2.c counts them
  // The continuation is what greedy decoding with the full cache gives.
  const std::vector<int> more = greedy_continuation(m, prompt, 40 + 1 - static_cast<std::int64_t>(prompt.size()));
  EXPECT_TRUE(std::equal(more.begin(), more.end(), g.tokens.begin() + static_cast<std::ptrdiff_t>(prompt.size())));
}

TEST(Llama2, TokenizerRoundTripsTextAndMergesPieces) {
  REQUIRE_MODEL();
  const tokenizer tok(models + "/tok512.bin", 512);
  for (const std::string text : {"Once upon a time, Lily saw a big dog.", "Tom said, \"Hi!\"\nThe end.",
                                 "caf\xc3\xa9 ok", "x"}) {
    const std::vector<int> ids = tok.encode(text);
    ASSERT_EQ(ids.front(), tokenizer::bos);
    std::string back;
    for (std::size_t i = 1; i < ids.size(); ++i) back += tok.decode(ids[i - 1], ids[i]);
    EXPECT_EQ(back, text);  // the " " prefix encode adds is dropped after BOS
  }
  // A code point no piece covers falls back to its bytes; like llama2.c, decode
  // prints no lone byte that is not printable ASCII or white space.
  const std::vector<int> cup = tok.encode("\xe2\x98\x95");  // U+2615
  const std::vector<int> bytes{tokenizer::first_byte_token + 0xe2, tokenizer::first_byte_token + 0x98,
                               tokenizer::first_byte_token + 0x95};
  ASSERT_GE(cup.size(), 3u);
  EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), cup.end() - 3));
  EXPECT_EQ(tok.decode(cup[cup.size() - 2], cup.back()), "");
  EXPECT_LT(tok.encode("Once upon a time").size(), std::string("Once upon a time").size() / 2);
  EXPECT_EQ(tok.encode("").size(), 1u);
}

TEST(Llama2, SamplerDrawsFromTheTemperatureSoftmax) {
  attnkit::test::seeded_rng s;
  const std::vector<float> logits{0.5f, 1.5f, -1.0f, 1.4f};
  const float temperature = 0.7f;
  sampler draw(temperature, s.seed);
  std::vector<double> p(logits.size()), count(logits.size(), 0.0);
  double sum = 0;
  for (std::size_t i = 0; i < p.size(); ++i) sum += p[i] = std::exp(logits[i] / temperature);
  const int n = 40000;
  for (int i = 0; i < n; ++i) count[draw(logits)] += 1;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double want = p[i] / sum, sigma = std::sqrt(want * (1 - want) / n);
    EXPECT_NEAR(count[i] / n, want, 5 * sigma) << "token " << i;
  }
  sampler greedy(0.0f, s.seed);
  EXPECT_EQ(greedy(logits), 1);
}

TEST(Llama2, LoaderRejectsAFileOfTheWrongSize) {
  const std::string path = ::testing::TempDir() + "attnkit_truncated_model.bin";
  const std::int32_t header[7] = {64, 172, 5, 8, 4, 512, 512};
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(header), sizeof header);
  try {
    load_model(path);
    ADD_FAILURE() << "a header-only file loaded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("the header implies"), std::string::npos) << e.what();
  }
  std::remove(path.c_str());
}

TEST(Llama2, EvaluationInvariants) {
  REQUIRE_MODEL();
  const model m = load_model(models + "/stories260K.bin");
  const tokenizer tok(models + "/tok512.bin", m.cfg.vocab_size);
  eval_setup setup;
  setup.prompts = {"Once upon a time", "The sun was hot"};
  setup.generated = 60;
  setup.context = 20;
  setup.budgets = {12, 100};  // 100 holds every token: nothing is evicted
  setup.kv_types = {"f32", "int8"};
  const eval_report rep = run_evaluation(m, tok, setup);
  // The full cache and 8 policies at each budget per storage type, then HiP and Quest (f32) at each budget.
  ASSERT_EQ(rep.rows.size(), 2 * (1u + 8u * setup.budgets.size()) + 2u * setup.budgets.size());
  const auto row = [&](const std::string& policy, std::int64_t budget) {
    for (const eval_row& r : rep.rows)
      if (r.policy == policy && r.budget == budget && r.kv == "f32") return r;
    ADD_FAILURE() << "no row " << policy << " at " << budget;
    return eval_row{};
  };
  for (const eval_row& r : rep.rows) {
    SCOPED_TRACE(r.kv + " " + r.policy + " at " + std::to_string(r.budget));
    if ((r.budget == 0 || r.budget == 100) && r.kv == "f32") {  // the full cache, in effect
      EXPECT_EQ(r.ppl_ratio, 1.0);
      EXPECT_EQ(r.agreement, 100.0);
    } else if (r.budget == 0 || r.budget == 100) {  // int8 rounding moves the text's NLL a little, not more
      EXPECT_NE(r.nll, rep.rows.front().nll);
      EXPECT_NEAR(r.ppl_ratio, 1.0, 0.02);
      EXPECT_GE(r.agreement, 90.0);
    } else if (r.policy == "hip" || r.policy == "quest") {  // selection keeps the whole cache
      EXPECT_GT(r.mean_rows, 12.0);
    } else if (r.policy != "snapkv" && r.policy != "duo") {  // those two keep rows past the budget
      EXPECT_LE(r.mean_rows, 12.0);
    }
  }
  EXPECT_EQ(row("a2sf-1", 12).nll, row("h2o", 12).nll);  // alpha = 1 is H2O, selection for selection
  EXPECT_GT(row("streaming", 12).ppl_ratio, 1.0);          // 80 tokens through 12 rows lose something
}

}  // namespace
