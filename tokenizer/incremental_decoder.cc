#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_state.h"
#include "tokenizer/utf8.h"

namespace spar {

IncrementalDecoder::IncrementalDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string IncrementalDecoder::Push(int32_t id) {
  const tokenizer_internal::TokenizerState& s = tok_.state();
  if (id < 0 || static_cast<size_t>(id) >= s.token_text.size() ||
      s.token_text[static_cast<size_t>(id)].empty() ||
      (skip_special_ && s.special[static_cast<size_t>(id)])) {
    return std::string();
  }
  const int16_t byte = s.byte_value[static_cast<size_t>(id)];
  if (byte >= 0) {
    pending_.push_back(static_cast<char>(byte));
  } else {
    pending_.append(s.token_bytes[static_cast<size_t>(id)]);
  }
  std::string out;
  const size_t used = tokenizer_internal::AppendUtf8Lossy(pending_, /*final=*/false, &out);
  pending_.erase(0, used);
  return out;
}

std::string IncrementalDecoder::Flush() {
  std::string out = tokenizer_internal::Utf8Lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace spar
