// The llama2.c tokenizer: a SentencePiece-style vocabulary with a score per
// piece, byte fallback for text no piece covers, and greedy BPE merging by
// score. Encoding and decoding follow llama2.c's run.c so generated text
// matches it byte for byte.
#pragma once

#include <cctype>
#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace llama2 {

class tokenizer {
 public:
  static constexpr int bos = 1, eos = 2;
  static constexpr int first_byte_token = 3;  // <0x00> .. <0xFF> are ids 3 .. 258

  /// Reads a llama2.c tokenizer file of vocab_size pieces.
  tokenizer(const std::string& path, int vocab_size) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot open tokenizer " + path);
    std::int32_t max_len = 0;
    in.read(reinterpret_cast<char*>(&max_len), sizeof max_len);
    for (int i = 0; i < vocab_size && in; ++i) {
      float score = 0;
      std::int32_t len = 0;
      in.read(reinterpret_cast<char*>(&score), sizeof score);
      in.read(reinterpret_cast<char*>(&len), sizeof len);
      if (!in || len < 0 || len > max_len) break;
      std::string piece(static_cast<std::size_t>(len), '\0');
      in.read(piece.data(), len);
      pieces_.push_back(piece);
      scores_.push_back(score);
      ids_.emplace(std::move(piece), i);  // the first of equal pieces wins
    }
    if (!in || static_cast<int>(pieces_.size()) != vocab_size)
      throw std::runtime_error(path + ": expected " + std::to_string(vocab_size) + " pieces, read " +
                               std::to_string(pieces_.size()));
  }

  int size() const { return static_cast<int>(pieces_.size()); }

  /// Token ids of text: BOS first, then (for non-empty text) the " " dummy
  /// prefix, then the text's pieces after merging pairs, best score first.
  std::vector<int> encode(const std::string& text) const {
    std::vector<int> tokens{bos};
    if (!text.empty()) tokens.push_back(id(" "));
    for (std::size_t i = 0; i < text.size();) {
      std::size_t n = 1;  // one UTF-8 code point: a lead byte and its continuation bytes
      while (i + n < text.size() && n < 4 && (static_cast<unsigned char>(text[i + n]) & 0xC0) == 0x80) ++n;
      const std::string cp = text.substr(i, n);
      if (const int t = id(cp); t >= 0) {
        tokens.push_back(t);
      } else {
        for (const char b : cp) tokens.push_back(first_byte_token + static_cast<unsigned char>(b));
      }
      i += n;
    }
    for (;;) {
      float best = -1e10f;
      std::size_t at = 0;
      int merged = -1;
      for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
        const int t = id(pieces_[tokens[i]] + pieces_[tokens[i + 1]]);
        if (t >= 0 && scores_[t] > best) best = scores_[t], at = i, merged = t;
      }
      if (merged < 0) break;
      tokens[at] = merged;
      tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(at) + 1);
    }
    return tokens;
  }

  /// The text llama2.c prints for `token` after `prev`: no leading space right
  /// after BOS, byte tokens as their byte, and nothing for a lone byte that is
  /// neither printable nor white space.
  std::string decode(int prev, int token) const {
    std::string piece = pieces_.at(static_cast<std::size_t>(token));
    if (prev == bos && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    if (piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>')
      piece = std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    if (piece.size() == 1) {
      const auto b = static_cast<unsigned char>(piece[0]);
      if (!std::isprint(b) && !std::isspace(b)) return {};
    }
    return piece;
  }

 private:
  int id(const std::string& piece) const {
    const auto it = ids_.find(piece);
    return it == ids_.end() ? -1 : it->second;
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> ids_;
};

}  // namespace llama2
