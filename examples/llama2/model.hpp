// The llama2.c checkpoint (legacy format, version 0): seven int32 of header,
// then the fp32 weights back to back in a fixed order. Matrices are row-major
// [out][in], one block per layer. ../shared/models/README.md has the layout.
#pragma once

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace llama2 {

struct config {
  int dim = 0;         // residual stream width
  int hidden_dim = 0;  // SwiGLU width
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // KV heads (GQA when fewer than n_heads)
  int vocab_size = 0;
  int seq_len = 0;     // trained context
  bool shared_classifier = true;  // logits use the token embedding (vocab_size > 0 in the file)

  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return n_kv_heads * head_size(); }
};

/// Pointers into one buffer holding the file's body; movable, not copyable
/// (a moved vector keeps its storage, so the pointers stay valid).
struct weights {
  std::vector<float> body;
  const float* token_embedding = nullptr;  // (vocab, dim)
  const float* rms_att = nullptr;          // (layers, dim)
  const float* wq = nullptr;               // (layers, dim, dim)
  const float* wk = nullptr;               // (layers, kv_dim, dim)
  const float* wv = nullptr;               // (layers, kv_dim, dim)
  const float* wo = nullptr;               // (layers, dim, dim)
  const float* rms_ffn = nullptr;          // (layers, dim)
  const float* w1 = nullptr;               // (layers, hidden, dim)
  const float* w2 = nullptr;               // (layers, dim, hidden)
  const float* w3 = nullptr;               // (layers, hidden, dim)
  const float* rms_final = nullptr;        // (dim)
  const float* classifier = nullptr;       // (vocab, dim)

  weights() = default;
  weights(weights&&) = default;
  weights& operator=(weights&&) = default;
  weights(const weights&) = delete;
  weights& operator=(const weights&) = delete;
};

struct model {
  config cfg;
  weights w;
};

/// Reads a checkpoint; throws std::runtime_error naming the file and what is wrong.
inline model load_model(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open model " + path);
  std::int32_t h[7];
  if (!in.read(reinterpret_cast<char*>(h), sizeof h)) throw std::runtime_error(path + ": shorter than its header");
  model m;
  config& c = m.cfg;
  c.dim = h[0], c.hidden_dim = h[1], c.n_layers = h[2], c.n_heads = h[3], c.n_kv_heads = h[4];
  c.shared_classifier = h[5] > 0;
  c.vocab_size = h[5] > 0 ? h[5] : -h[5];
  c.seq_len = h[6];
  if (c.dim <= 0 || c.hidden_dim <= 0 || c.n_layers <= 0 || c.n_heads <= 0 || c.n_kv_heads <= 0 ||
      c.vocab_size <= 0 || c.seq_len <= 0 || c.dim % c.n_heads != 0 || c.n_heads % c.n_kv_heads != 0 ||
      c.head_size() % 2 != 0)
    throw std::runtime_error(path + ": not a llama2.c checkpoint (bad header)");

  const std::size_t dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers, kv = c.kv_dim();
  const std::size_t vocab = c.vocab_size, half_head = c.head_size() / 2;
  // Element counts in file order; the legacy RoPE tables (unused) sit before the classifier.
  const std::size_t counts[] = {vocab * dim,          layers * dim,          layers * dim * dim,
                                layers * kv * dim,    layers * kv * dim,     layers * dim * dim,
                                layers * dim,         layers * hidden * dim, layers * dim * hidden,
                                layers * hidden * dim, dim,                  2 * c.seq_len * half_head,
                                c.shared_classifier ? 0 : vocab * dim};
  std::size_t total = 0;
  for (const std::size_t n : counts) total += n;
  in.seekg(0, std::ios::end);
  const auto bytes = static_cast<std::size_t>(in.tellg());
  if (bytes != sizeof h + total * sizeof(float))
    throw std::runtime_error(path + ": " + std::to_string(bytes) + " bytes, the header implies " +
                             std::to_string(sizeof h + total * sizeof(float)));
  weights& w = m.w;
  w.body.resize(total);
  in.seekg(sizeof h);
  in.read(reinterpret_cast<char*>(w.body.data()), static_cast<std::streamsize>(total * sizeof(float)));
  if (!in) throw std::runtime_error(path + ": read failed");

  const float* p = w.body.data();
  const float** fields[] = {&w.token_embedding, &w.rms_att, &w.wq,  &w.wk,        &w.wv, &w.wo,        &w.rms_ffn,
                            &w.w1,              &w.w2,      &w.w3,  &w.rms_final, nullptr, &w.classifier};
  for (std::size_t i = 0; i < std::size(counts); ++i) {
    if (fields[i] != nullptr) *fields[i] = p;
    p += counts[i];
  }
  if (c.shared_classifier) w.classifier = w.token_embedding;
  return m;
}

}  // namespace llama2
