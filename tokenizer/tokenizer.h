// spar/tokenizer/tokenizer.h — Hugging Face tokenizer.json BPE tokenizers
// (Llama-3 byte-level, Gemma byte-fallback), their chat formats, and
// streaming decode.
//
// Encoding and decoding match the Hugging Face `tokenizers` library id for id:
// added tokens are split out first (leftmost-longest), then Llama-3 text is
// pre-tokenized with the Split regex read from tokenizer.json (PCRE2, UTF +
// UCP, JIT) and byte-level BPE'd; Gemma text is normalised (" " -> "▁") and
// BPE'd as one word with <0xXX> byte fallback. Text that is not valid UTF-8
// is first repaired (each invalid subpart -> U+FFFD), since HF only accepts
// valid strings.
//
// Deliberate differences from `transformers` (not `tokenizers`):
//  - Decode never applies `clean_up_tokenization_spaces` (it would break
//    round trips such as "a ." -> "a.").
//  - Encode adds BOS only when asked (add_bos); it ignores post_processor.
//
// Thread safety: a Tokenizer is immutable after FromDir except for an
// internal, mutex-guarded word cache; every const method may be called from
// any number of threads at once. IncrementalDecoder is not thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/chat.h"
#include "common/status.h"

namespace spar {

namespace tokenizer_internal {
struct TokenizerState;
}  // namespace tokenizer_internal

class Tokenizer {
 public:
  // Loads <dir>/tokenizer.json and, when present, <dir>/tokenizer_config.json
  // (chat template, bos/eos tokens). Without a config the family's usual BOS
  // / EOS names and chat format are used.
  // Errors: NotFound (no folder / no tokenizer.json), InvalidArgument naming
  // the file and the bad field (bad JSON, no "model", an unsupported model,
  // normaliser or pre-tokenizer, a merge outside the vocabulary).
  static Result<std::unique_ptr<Tokenizer>> FromDir(const std::string& dir);

  // Same, from the two files' contents; `config_json` may be empty. `origin`
  // names the source in error messages.
  static Result<std::unique_ptr<Tokenizer>> FromJson(std::string_view tokenizer_json,
                                                     std::string_view config_json,
                                                     const std::string& origin);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Plain text -> ids. add_bos prepends BOS when the tokenizer has one.
  // parse_special: special added tokens written in the text ("<|eot_id|>")
  // become their ids; when false they are encoded as ordinary text
  // (non-special added tokens are always recognised, as in HF).
  std::vector<int32_t> Encode(std::string_view text, bool add_bos = false,
                              bool parse_special = true) const;

  // ids -> text, as HF's decode (no cleanup). Unknown ids are dropped;
  // skip_special drops special added tokens.
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  // The raw vocabulary string ("Ġthe", "▁the", "<0x0A>", "<|eot_id|>");
  // empty for an unknown id.
  std::string TokenText(int32_t id) const;
  std::optional<int32_t> TokenId(std::string_view token) const;
  // True for added tokens marked "special" in tokenizer.json.
  bool IsSpecial(int32_t id) const;

  int32_t bos_id() const;  // -1 if none
  // tokenizer_config's eos_token (Meta-Llama-3 base: <|end_of_text|> 128001;
  // -Instruct: <|eot_id|> 128009; Gemma: <eos> 1); -1 if none.
  int32_t eos_id() const;
  // Ids that end an assistant turn, sorted: eos_id plus whichever of
  // <|end_of_text|>, <|eom_id|>, <|eot_id|>, <eos>, <end_of_turn> exist.
  std::vector<int32_t> stop_ids() const;
  int64_t vocab_size() const;  // highest id + 1, added tokens included
  std::string family() const;  // "llama3" | "gemma"

  // Renders a conversation the way tokenizer_config.json's chat template does
  // for plain system/user/assistant messages (no Jinja engine: the family's
  // format is reproduced).
  //  - Llama-3: <|begin_of_text|> then per message
  //    "<|start_header_id|>ROLE<|end_header_id|>\n\n" + trim(content) + "<|eot_id|>";
  //    add_generation_prompt appends the assistant header. (The Meta-Llama-3
  //    base template appends that header unconditionally; here it follows
  //    add_generation_prompt, as the -Instruct template does.)
  //  - Gemma: <bos> then per message "<start_of_turn>ROLE\n" + trim(content) +
  //    "<end_of_turn>\n" with assistant -> model; add_generation_prompt appends
  //    "<start_of_turn>model\n". Gemma's template rejects a system role; here
  //    a leading system message is instead prepended to the first user turn as
  //    trim(system) + "\n\n" + user content.
  // Errors: InvalidArgument naming the message index for an unknown role, a
  // system message after the first, or (Gemma) roles that do not alternate
  // user/assistant starting with user; FailedPrecondition when the tokenizer
  // has no known chat format.
  Result<std::string> RenderChat(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt) const;
  // RenderChat, then Encode(parse_special = true, add_bos = false): the
  // rendered text carries BOS itself.
  Result<std::vector<int32_t>> EncodeChat(const std::vector<ChatMessage>& messages,
                                          bool add_generation_prompt) const;

  // Internal: the bytes a token stands for in a streaming decode.
  const tokenizer_internal::TokenizerState& state() const { return *state_; }

 private:
  explicit Tokenizer(std::unique_ptr<tokenizer_internal::TokenizerState> state);
  std::unique_ptr<tokenizer_internal::TokenizerState> state_;
};

// Turns ids into text one at a time, for streaming generation. Never emits a
// broken UTF-8 sequence: bytes of an incomplete character are held back until
// a later token completes them; invalid bytes become U+FFFD. The concatenation
// of every Push() and the final Flush() equals Tokenizer::Decode of all ids
// (Gemma: except on invalid <0xXX> byte runs, where Decode turns every byte of
// the run into U+FFFD and the stream only the invalid subparts).
// Holds a reference to `tok`, which must outlive it. Not thread-safe.
class IncrementalDecoder {
 public:
  explicit IncrementalDecoder(const Tokenizer& tok, bool skip_special = true);
  // Text completed by this id (possibly empty).
  std::string Push(int32_t id);
  // Whatever is held back, incomplete bytes as U+FFFD; resets the decoder.
  std::string Flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;
};

}  // namespace spar
