// 02_flash_prefill_decode: one attention layer of a generation loop on a paged
// KV cache, with attnkit::flash_attention.
//
// A prompt of 100 tokens is prefilled (causal), then 40 tokens are decoded one
// at a time. Keys and values live in 16-token pages of a shared f16 pool, and
// a block table lists each sequence's pages in order; a new page is taken from
// the pool whenever the last one fills. The engine lends the kernel a
// workspace sized once for the longest sequence, so the loop allocates
// nothing. Every step is checked against dense_attention on the same tokens.
//
// The program is built for the baseline x86-64 arch and runs the best kernels
// of the CPU it lands on (attnkit::cpu_dispatch, with the per-arch units of
// attnkit_cpu_dispatch_units, linked in examples/CMakeLists.txt). On a CPU without
// AVX2 it prints attnkit's error and exits with code 2.
#include <attnkit/attnkit.hpp>
#include <attnkit/cpu_dispatch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

using namespace attnkit;

namespace {

constexpr std::int64_t hq = 8, hkv = 2, d = 64, page_size = 16, prompt = 100, generate = 40;
constexpr std::int64_t max_tokens = prompt + generate;

/// A one-sequence paged cache for K and V: pool (pages, hkv, page_size, d) and its block table.
struct paged_cache {
  tensor<half, 4> k_pool, v_pool;
  std::vector<std::int32_t> indptr{0, 0}, pages, last_len{0};
  std::vector<std::int32_t> free_pages;
  std::int64_t length = 0;

  explicit paged_cache(std::int64_t num_pages)
      : k_pool({num_pages, hkv, page_size, d}), v_pool({num_pages, hkv, page_size, d}) {
    for (std::int64_t p = num_pages - 1; p >= 0; --p) free_pages.push_back(static_cast<std::int32_t>(p));
    std::shuffle(free_pages.begin(), free_pages.end(), std::mt19937(1));  // pages need not be in order
  }

  /// Appends one token's keys and values, (hkv, d) each.
  void append(const float* k_tok, const float* v_tok) {
    if (length % page_size == 0) {
      pages.push_back(free_pages.back());
      free_pages.pop_back();
    }
    const std::int64_t page = pages.back(), slot = length % page_size;
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t x = 0; x < d; ++x) {
        k_pool(page, h, slot, x) = half(k_tok[h * d + x]);
        v_pool(page, h, slot, x) = half(v_tok[h * d + x]);
      }
    ++length;
    indptr[1] = static_cast<std::int32_t>(pages.size());
    last_len[0] = static_cast<std::int32_t>(slot + 1);
  }

  block_table table() const {
    return {tensor_view<const std::int32_t, 1>(indptr.data(), {2}),
            tensor_view<const std::int32_t, 1>(pages.data(), {static_cast<std::int64_t>(pages.size())}),
            tensor_view<const std::int32_t, 1>(last_len.data(), {1})};
  }
  paged_kv<const half> keys() const { return {k_pool.cview(), table()}; }
  paged_kv<const half> values() const { return {v_pool.cview(), table()}; }
};

/// Largest |a - b| between the paged result and dense_attention over the same (f16-rounded) tokens.
float check_against_dense(const tensor<float, 4>& q, const tensor<float, 4>& o, const tensor<half, 4>& k_all,
                          const tensor<half, 4>& v_all, std::int64_t len, const attention_params& params) {
  const auto k = k_all.cview().slice(2, 0, len), v = v_all.cview().slice(2, 0, len);
  tensor<float, 4> expect(o.extents());
  dense_attention(q.cview(), k, v, expect.view(), params, {}, {}, reference{});
  float worst = 0;
  for (std::int64_t i = 0; i < o.size(); ++i) worst = std::max(worst, std::abs(o.data()[i] - expect.data()[i]));
  return worst;
}

int run() {
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  const auto random_tensor = [&](std::int64_t s) {
    tensor<float, 4> t({1, hq, s, d});
    for (std::int64_t i = 0; i < t.size(); ++i) t.data()[i] = normal(rng);
    return t;
  };

  paged_cache cache((max_tokens + page_size - 1) / page_size);
  tensor<half, 4> k_all({1, hkv, max_tokens, d}), v_all({1, hkv, max_tokens, d});  // the same tokens, contiguous
  const auto add_token = [&] {
    std::vector<float> k_tok(hkv * d), v_tok(hkv * d);
    for (float& x : k_tok) x = normal(rng);
    for (float& x : v_tok) x = normal(rng);
    for (std::int64_t h = 0; h < hkv; ++h)
      for (std::int64_t x = 0; x < d; ++x) {
        k_all(0, h, cache.length, x) = half(k_tok[h * d + x]);
        v_all(0, h, cache.length, x) = half(v_tok[h * d + x]);
      }
    cache.append(k_tok.data(), v_tok.data());
  };

  // One workspace for every call: the larger of a full-capacity prefill and a full-capacity decode step.
  cpu_dispatch backend;
  std::printf("kernels: %s\n", cpu_dispatch_arch());
  const tensor<float, 4> q_prefill_sizing({1, hq, max_tokens, d}), q_decode_sizing({1, hq, 1, d});
  std::vector<unsigned char> scratch(
      std::max(flash_attention_workspace_size(q_prefill_sizing.cview(), k_all.cview(), v_all.cview(), backend),
               flash_attention_workspace_size(q_decode_sizing.cview(), k_all.cview(), v_all.cview(), backend)));
  backend.scratch = {scratch.data(), scratch.size()};

  attention_params params;
  params.causal = true;

  // Prefill: the prompt's keys and values enter the cache, then its queries attend causally.
  for (std::int64_t t = 0; t < prompt; ++t) add_token();
  const tensor<float, 4> q_prompt = random_tensor(prompt);
  tensor<float, 4> o_prompt({1, hq, prompt, d});
  flash_attention(q_prompt.cview(), cache.keys(), cache.values(), o_prompt.view(), params, {}, backend);
  float worst = check_against_dense(q_prompt, o_prompt, k_all, v_all, cache.length, params);
  std::printf("prefill: %lld tokens in %zu pages of %lld, max |flash - dense| = %.2e\n",
              static_cast<long long>(prompt), cache.pages.size(), static_cast<long long>(page_size), worst);

  // Decode: each step appends the new token's K and V, then its query attends to the whole cache.
  tensor<float, 3> lse({1, hq, 1});
  for (std::int64_t step = 0; step < generate; ++step) {
    add_token();
    const tensor<float, 4> q_tok = random_tensor(1);
    tensor<float, 4> o_tok({1, hq, 1, d});
    flash_attention(q_tok.cview(), cache.keys(), cache.values(), o_tok.view(), params, lse.view(), backend);
    worst = std::max(worst, check_against_dense(q_tok, o_tok, k_all, v_all, cache.length, params));
    if (step % 10 == 9)
      std::printf("decode step %2lld: cache %3lld tokens in %zu pages, head 0 lse %.4f\n",
                  static_cast<long long>(step + 1), static_cast<long long>(cache.length), cache.pages.size(),
                  lse(0, 0, 0));
  }
  std::printf("max |flash - dense| over all steps: %.2e\n", worst);
  return worst < 1e-4f ? 0 : 1;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const attnkit::error& e) {  // e.g. a CPU below every arch this binary is built for
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
