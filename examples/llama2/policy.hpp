// The eviction policy each layer's KV cache runs, from --policy NAME --budget N.
//
// One rule per policy, the same at every budget B (rows per KV head), every
// schedule the paper's (slack 0: evict as soon as a head is over budget):
//   full       keeps everything (the reference)
//   streaming  StreamingLLM: 4 sinks + the last B - 4 rows; positions in the
//              cache, keys re-rotated when they move (as the paper does)
//   h2o        H2O: the last B/2 rows + the B/2 best by accumulated attention
//   a2sf       A2SF: H2O's split, scores decayed by alpha per query row
//   tova       TOVA: the B rows the newest query attends to most (layer mean)
//   snapkv     SnapKV: after the prompt, the last w = min(32, B/2) prompt rows +
//              the best by their pooled attention (avg, kernel 5); never evicts again
//   duo        DuoAttention: retrieval heads keep everything, streaming heads
//              4 sinks + the last B - 4 rows; which heads stream comes from
//              measured gates (see duo_calibration.hpp)
// Positions stay the tokens' own except for streaming.
//
// Dynamic selection instead of eviction (--sparse, with the full cache): at
// each decode step, every query head attends about B rows of the cache, which
// keeps everything; blocks and pages of 8 rows:
//   hip        4 sinks + the last B/2 rows + HiP's search for B/2 - 4 more
//   quest      the B/8 pages of highest Quest bound, its own page among them
//              (per-page key bounds kept as keys are appended)
#pragma once

#include <attnkit/attnkit.hpp>

#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "model.hpp"

namespace llama2 {

using namespace attnkit;

/// The policy of no eviction.
struct full_cache {
  static constexpr bool wants_weights = false;
  void observe(const token_index&, tensor_view<const float, 2>, std::int64_t) {}
  std::optional<keep_set> select(const token_index&) const { return std::nullopt; }
  void retain(const keep_set&) {}
};

using layer_policy = std::variant<full_cache, streaming_llm, h2o, a2sf, tova, snapkv, duo_attention>;

struct policy_spec {
  std::string name = "full";
  std::int64_t budget = 0;       ///< rows per KV head; > 4 unless full
  float alpha = 0.0f;            ///< a2sf's forgetting factor
  std::vector<char> retrieval;   ///< duo: (layers, kv heads), 1 = keeps the full cache
  std::string kv = "f32";        ///< the cache's storage: f32, int8 (a scale per row) or fp8 (e4m3, a scale per head)
  std::vector<float> k_scales{}, v_scales{};  ///< fp8: per (layer, KV head) (calibrate_fp8); empty: 1
  std::string sparse = "";       ///< "", hip or quest: each decode step attends only the budget's selected rows

  static constexpr std::int64_t sinks = 4;  ///< StreamingLLM's default, also Duo's streaming heads here
};

inline const std::vector<std::string>& policy_names() {
  static const std::vector<std::string> names{"full", "streaming", "h2o", "a2sf", "tova", "snapkv", "duo"};
  return names;
}

/// Checks a spec before any model work; throws std::invalid_argument.
inline void check_spec(const policy_spec& s, const config& c) {
  bool known = false;
  for (const auto& n : policy_names()) known |= n == s.name;
  if (!known) throw std::invalid_argument("unknown policy '" + s.name + "'");
  if (s.kv != "f32" && s.kv != "int8" && s.kv != "fp8")
    throw std::invalid_argument("--kv must be f32, int8 or fp8, got '" + s.kv + "'");
  if (!s.sparse.empty() && s.sparse != "hip" && s.sparse != "quest")
    throw std::invalid_argument("--sparse must be hip or quest, got '" + s.sparse + "'");
  if (!s.sparse.empty() && s.name != "full") throw std::invalid_argument("--sparse runs with the full cache (no --policy)");
  if (s.name == "full" && s.sparse.empty()) return;
  if (s.budget <= policy_spec::sinks || s.budget >= c.seq_len)
    throw std::invalid_argument("--budget must be in (" + std::to_string(policy_spec::sinks) + ", " +
                                std::to_string(c.seq_len) + ") for policy " + s.name);
  if (s.name == "a2sf" && !(s.alpha > 0.0f && s.alpha <= 1.0f))
    throw std::invalid_argument("a2sf needs --alpha in (0, 1]");
  if (s.name == "duo" && static_cast<int>(s.retrieval.size()) != c.n_layers * c.n_kv_heads)
    throw std::invalid_argument("duo needs one retrieval flag per (layer, KV head)");
}

inline layer_policy make_policy(const policy_spec& s, int layer, int kv_heads) {
  const std::int64_t b = s.budget, sinks = policy_spec::sinks;
  if (s.name == "streaming") return streaming_llm({sinks, b - sinks, 0, {}});
  if (s.name == "h2o") return h2o({b, 0, b / 2, 0, {}});
  if (s.name == "a2sf") return a2sf({b, 0, b / 2, 0, {}}, s.alpha);
  if (s.name == "tova") return tova({b, 0, {}});
  if (s.name == "snapkv") return snapkv({b, std::min<std::int64_t>(32, b / 2), 5, snapkv_pooling::avg});
  if (s.name == "duo")
    return duo_attention({s.retrieval.begin() + layer * kv_heads, s.retrieval.begin() + (layer + 1) * kv_heads},
                         {sinks, b - sinks, 0});
  return full_cache{};
}

/// Rows per HiP key block and per Quest page.
inline constexpr std::int64_t sparse_block = 8;

inline hip_options hip_for(std::int64_t budget) {
  hip_options o;
  o.block_k = sparse_block;
  o.sinks = policy_spec::sinks;
  o.window = budget / 2;
  o.top_k = budget - o.sinks - o.window;
  return o;
}

/// The model's RoPE: interleaved pairs over the whole head, base 10000.
inline rope model_rope() { return {10000.0, rope_layout::interleaved, 0}; }

/// One pool for `sequences` sequences, every layer of each able to hold the whole context.
inline kv_pool_options pool_options(const policy_spec& s, const config& c, std::int64_t sequences) {
  kv_pool_options o;
  o.layers = c.n_layers;
  o.hkv = c.n_kv_heads;
  o.d = c.head_size();
  o.page_size = 16;
  o.num_pages = sequences * c.n_layers * c.n_kv_heads * ((c.seq_len + 15) / 16);
  o.max_sequences = sequences;
  if (s.name == "streaming") {
    o.positions = position_mode::in_cache;
    o.rerotate = model_rope();
  }
  if (s.kv == "fp8") {
    o.k_scales = s.k_scales;
    o.v_scales = s.v_scales;
  }
  return o;
}

/// The engine's KV pool, of the storage type policy_spec::kv names.
using any_pool = std::variant<kv_pool<float>, kv_pool<std::int8_t>, kv_pool<fp8_e4m3>>;

inline any_pool make_pool(const policy_spec& s, const config& c, std::int64_t sequences) {
  const kv_pool_options o = pool_options(s, c, sequences);
  if (s.kv == "int8") return any_pool(std::in_place_type<kv_pool<std::int8_t>>, o);
  if (s.kv == "fp8") return any_pool(std::in_place_type<kv_pool<fp8_e4m3>>, o);
  return any_pool(std::in_place_type<kv_pool<float>>, o);
}

/// The weight of each of a call's n query rows in the key weights a policy observes.
template <class P>
std::vector<float> row_weights(const P&, std::int64_t) { return {}; }  // every row weighs 1
inline std::vector<float> row_weights(const a2sf& p, std::int64_t n) { return a2sf::row_weights(p.alpha(), n); }
inline std::vector<float> row_weights(const tova&, std::int64_t n) { return tova::last_row_weights(n); }
inline std::vector<float> row_weights(const snapkv& p, std::int64_t n) { return p.window_row_weights(n); }

}  // namespace llama2
