// spar/tokenizer/bpe.h — the BPE model of a tokenizer.json (internal).
//
// Two flavours, both exact ports of Hugging Face tokenizers' BPE::tokenize:
//  - byte-level (Llama-3): a word arrives as raw bytes; each byte starts as
//    the token of its GPT-2 byte-to-unicode character, and vocabulary and
//    merge lookups use the raw bytes the tokens stand for.
//  - character (Gemma): a word arrives as normalised UTF-8; each code point
//    starts as its own token, unknown ones fall back to <0xXX> byte tokens
//    (byte_fallback) or to a (fused) unk token.
// Merges are applied lowest rank first (ties: leftmost), as HF does.
//
// Thread safety: immutable after Build(); Tokenize may run concurrently.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace spar::tokenizer_internal {

struct BpeOptions {
  bool byte_level = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
  bool fuse_unk = false;
  int32_t unk_id = -1;
};

class BpeModel {
 public:
  // `vocab` maps each token's key (raw bytes when byte_level, else the vocab
  // string) to its id; `merges` lists (left key, right key) pairs by rank.
  // Returns InvalidArgument naming the first merge whose parts or result are
  // not in the vocabulary.
  Status Build(const BpeOptions& options, std::unordered_map<std::string, int32_t> vocab,
               const std::vector<std::pair<std::string, std::string>>& merges);

  // Appends the ids of one pre-tokenized word to `out`.
  void Tokenize(std::string_view word, std::vector<int32_t>* out) const;

  const std::unordered_map<std::string, int32_t>& vocab() const { return vocab_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t PairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  void InitialSymbols(std::string_view word, std::vector<int32_t>* ids) const;
  void MergeAll(std::vector<int32_t>* ids) const;

  BpeOptions options_;
  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::unordered_map<uint32_t, int32_t> char_ids_;  // single code point tokens (character BPE)
  std::array<int32_t, 256> byte_ids_{};  // byte-level: byte token; else <0xXX> fallback or -1
};

// The GPT-2 byte-to-unicode table: printable bytes map to themselves, the
// rest to U+0100 onwards.
const std::array<uint32_t, 256>& ByteToUnicode();

// Inverse of ByteToUnicode for a whole token: returns false (and leaves *out
// partial) if some character is not in the table.
bool ByteLevelToBytes(std::string_view token, std::string* out);

}  // namespace spar::tokenizer_internal
