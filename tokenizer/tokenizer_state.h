// spar/tokenizer/tokenizer_state.h — what a loaded Tokenizer holds (internal;
// shared by the .cc files of this folder only).
#pragma once

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <array>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"

namespace spar::tokenizer_internal {

enum class Family { kLlama3, kGemma };
enum class ChatFormat { kNone, kLlama3, kGemma };

// Finds added tokens in raw text, leftmost-longest (as HF's aho-corasick
// LeftmostLongest), with a byte trie.
class AddedTokenMatcher {
 public:
  void Add(std::string_view content, int32_t id);
  // Earliest match starting at or after `from`; the longest among those
  // starting there. Returns false if none.
  bool FindNext(std::string_view text, size_t from, size_t* pos, size_t* len, int32_t* id) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
    int32_t id = -1;
  };
  int32_t Child(int32_t node, uint8_t byte) const;
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_byte_{};
};

struct TokenizerState {
  Family family = Family::kLlama3;
  std::vector<std::string> token_text;   // vocab string by id
  std::vector<std::string> token_bytes;  // what a token decodes to (Gemma: "▁" -> " ")
  std::vector<int16_t> byte_value;       // Gemma <0xXX> tokens: the byte; else -1
  std::vector<uint8_t> special;          // special added tokens
  std::unordered_map<std::string, int32_t> text_to_id;
  AddedTokenMatcher added;
  BpeModel bpe;

  // Llama-3 pre-tokenizer.
  pcre2_code* regex = nullptr;
  bool add_prefix_space = false;
  // Gemma normaliser and decoder.
  bool replace_space = false;
  std::string prepend;
  int strip_start = 0;
  int strip_stop = 0;

  int32_t bos_id = -1;
  int32_t eos_id = -1;
  std::string bos_text;
  ChatFormat chat_format = ChatFormat::kNone;

  // Word -> ids cache for short pre-tokens (HF caches the same way).
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;

  ~TokenizerState() {
    if (regex != nullptr) pcre2_code_free(regex);
  }
};

}  // namespace spar::tokenizer_internal
