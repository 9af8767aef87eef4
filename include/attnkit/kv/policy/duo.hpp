// DuoAttention: retrieval heads and streaming heads (Xiao et al., ICLR 2025).
//
// Each (layer, KV head) has a trained gate in [0, 1]. Binarized, a gate makes
// its head a retrieval head, which keeps every row, or a streaming head, which
// keeps only `sinks` + `recent` rows (defaults 64 + 256, the deployment
// example; the trained patterns use 128 + 256). Two ways to binarize:
//   by sparsity s  exactly round(s * layers * heads) streaming heads: the lowest
//                  gates, ties to the lower (layer, head) index
//   by threshold   retrieval iff gate >= threshold
// Heads then hold different lengths, and one flash call over the cache's paged
// view serves them all. Streaming heads trim after every prefill chunk and
// decode step (slack 0). Positions stay original.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <numeric>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/core/config.hpp"
#include "attnkit/core/error.hpp"
#include "attnkit/core/tensor_view.hpp"
#include "attnkit/kv/keep_set.hpp"
#include "attnkit/kv/token_index.hpp"

ATTNKIT_BEGIN_NAMESPACE

/// Gates of every (layer, KV head), row-major.
struct duo_gates {
  std::int64_t layers = 0, heads = 0;
  std::vector<float> values;  // (layers, heads)

  /// Checks the shape and that every gate is finite.
  duo_gates(std::int64_t layers_, std::int64_t heads_, std::vector<float> values_)
      : layers(layers_), heads(heads_), values(std::move(values_)) {
    ATTNKIT_CHECK(layers > 0 && heads > 0, "duo_gates: layers and heads must be > 0, got ", layers, " and ", heads);
    const auto n = static_cast<std::int64_t>(values.size());
    ATTNKIT_CHECK(n % layers == 0 && n / layers == heads, "duo_gates: expected layers * heads = ", layers, " * ",
                  heads, " gates, got ", n);
    for (std::size_t i = 0; i < values.size(); ++i)
      ATTNKIT_CHECK(std::isfinite(values[i]), "duo_gates: gate ", i, " is not finite");
  }

  /// Reads DuoAttention's full_attention_heads.tsv format: one line per layer,
  /// its KV heads' gates separated by tabs or spaces.
  static duo_gates load(const std::string& path) {
    std::ifstream in(path);
    ATTNKIT_CHECK(in.good(), "duo_gates::load: cannot open ", path);
    return parse(in, path);
  }

  /// The same format from a stream; `source` names it in errors.
  static duo_gates parse(std::istream& in, const std::string& source) {
    const std::string& path = source;
    std::vector<float> values;
    std::int64_t layers = 0, heads = 0;
    for (std::string line; std::getline(in, line);) {
      std::istringstream fields(line);
      std::int64_t n = 0;
      for (float g; fields >> g; ++n) values.push_back(g);
      ATTNKIT_CHECK(fields.eof(), "duo_gates::load: ", path, " line ", layers + 1, " has a field that is not a number");
      if (n == 0) continue;
      ATTNKIT_CHECK(heads == 0 || n == heads, "duo_gates::load: ", path, " line ", layers + 1, " has ", n,
                    " gates, the first line ", heads);
      heads = n;
      ++layers;
    }
    return duo_gates(layers, heads, std::move(values));
  }
};

/// Which (layer, KV head) keeps the full cache.
struct duo_heads {
  std::int64_t layers = 0, heads = 0;
  std::vector<char> retrieval;  // (layers, heads)

  /// The retrieval flags of one layer's KV heads.
  std::vector<char> layer(std::int64_t l) const {
    ATTNKIT_CHECK(l >= 0 && l < layers, "duo_heads::layer: layer must be in [0, ", layers, "), got ", l);
    return {retrieval.begin() + l * heads, retrieval.begin() + (l + 1) * heads};
  }

  std::int64_t streaming_count() const {
    return static_cast<std::int64_t>(std::count(retrieval.begin(), retrieval.end(), 0));
  }

  static duo_heads by_sparsity(const duo_gates& g, double sparsity) {
    ATTNKIT_CHECK(sparsity >= 0.0 && sparsity <= 1.0, "duo_heads::by_sparsity: sparsity must be in [0, 1], got ",
                  sparsity);
    const std::int64_t n = g.layers * g.heads;
    const auto streaming = static_cast<std::int64_t>(std::llround(sparsity * static_cast<double>(n)));
    std::vector<std::int64_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t a, std::int64_t b) { return g.values[a] < g.values[b]; });
    duo_heads out{g.layers, g.heads, std::vector<char>(static_cast<std::size_t>(n), 1)};
    for (std::int64_t i = 0; i < streaming; ++i) out.retrieval[order[i]] = 0;
    return out;
  }

  static duo_heads by_threshold(const duo_gates& g, float threshold) {
    duo_heads out{g.layers, g.heads, {}};
    for (const float v : g.values) out.retrieval.push_back(v >= threshold);
    return out;
  }
};

struct duo_options {
  std::int64_t sinks = 64;
  std::int64_t recent = 256;
  std::int64_t slack = 0;
};

/// The policy of one layer: streaming heads keep sinks + recent, retrieval heads everything.
class duo_attention {
 public:
  static constexpr bool wants_weights = false;

  duo_attention(std::vector<char> retrieval, duo_options o) : retrieval_(std::move(retrieval)), o_(o) {
    detail::check_rows("duo_attention", "sinks", o_.sinks);
    detail::check_rows("duo_attention", "recent", o_.recent, 1);
    detail::check_rows("duo_attention", "slack", o_.slack);
  }

  bool is_retrieval(std::int64_t h) const { return retrieval_[h] != 0; }

  void observe(const token_index&, tensor_view<const float, 2> = {}, std::int64_t = 1) {}

  std::optional<keep_set> select(const token_index& index) const {
    ATTNKIT_CHECK(static_cast<std::int64_t>(retrieval_.size()) == index.heads(), "duo_attention: ", retrieval_.size(),
                  " head flags for a cache of ", index.heads(), " KV heads");
    const std::int64_t full = INT64_MAX / 2;  // a retrieval head's budget: never reached
    return select_over_budget(
        index, [&](std::int64_t h) { return is_retrieval(h) ? full : o_.sinks + o_.recent; }, o_.slack,
        protection{o_.sinks, o_.recent, {}}, [](std::int64_t, std::int64_t) { return 0.0f; });
  }

  void retain(const keep_set&) {}

 private:
  std::vector<char> retrieval_;
  duo_options o_;
};

ATTNKIT_END_NAMESPACE
