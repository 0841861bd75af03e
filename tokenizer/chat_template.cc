// Tokenizer::RenderChat / EncodeChat: the Llama-3 and Gemma chat formats,
// reproduced from their tokenizer_config.json templates (see tokenizer.h).
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_state.h"
#include "tokenizer/utf8.h"

namespace spar {
namespace {

using tokenizer_internal::ChatFormat;
using tokenizer_internal::TrimPythonWhitespace;

Status BadMessage(size_t index, const std::string& what) {
  return InvalidArgument("chat message " + std::to_string(index) + ": " + what);
}

bool KnownRole(const std::string& role) {
  return role == "system" || role == "user" || role == "assistant";
}

Result<std::string> RenderLlama3(const std::vector<ChatMessage>& messages, const std::string& bos,
                                 bool add_generation_prompt) {
  std::string out = bos;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (!KnownRole(m.role))
      return BadMessage(i, "unknown role '" + m.role + "' (expected system, user or assistant)");
    if (m.role == "system" && i != 0) return BadMessage(i, "a system message must come first");
    out.append("<|start_header_id|>").append(m.role).append("<|end_header_id|>\n\n");
    out.append(TrimPythonWhitespace(m.content)).append("<|eot_id|>");
  }
  if (add_generation_prompt) out.append("<|start_header_id|>assistant<|end_header_id|>\n\n");
  return out;
}

Result<std::string> RenderGemma(const std::vector<ChatMessage>& messages, const std::string& bos,
                                bool add_generation_prompt) {
  std::string out = bos;
  std::string system;
  size_t first = 0;
  if (!messages.empty() && messages[0].role == "system") {
    system = std::string(TrimPythonWhitespace(messages[0].content));
    first = 1;
    if (messages.size() == 1)
      return BadMessage(0, "a system message needs a user message after it");
  }
  for (size_t i = first; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (!KnownRole(m.role))
      return BadMessage(i, "unknown role '" + m.role + "' (expected system, user or assistant)");
    if (m.role == "system") return BadMessage(i, "a system message must come first");
    const bool expect_user = (i - first) % 2 == 0;
    if ((m.role == "user") != expect_user) {
      return BadMessage(i, "role '" + m.role + "' breaks the user/assistant alternation (" +
                               (expect_user ? "user" : "assistant") + " expected)");
    }
    std::string content = m.content;
    if (i == first && first == 1) content = system + "\n\n" + content;
    out.append("<start_of_turn>").append(m.role == "assistant" ? "model" : "user").append("\n");
    out.append(TrimPythonWhitespace(content)).append("<end_of_turn>\n");
  }
  if (add_generation_prompt) out.append("<start_of_turn>model\n");
  return out;
}

}  // namespace

Result<std::string> Tokenizer::RenderChat(const std::vector<ChatMessage>& messages,
                                          bool add_generation_prompt) const {
  switch (state_->chat_format) {
    case ChatFormat::kLlama3:
      return RenderLlama3(messages, state_->bos_text, add_generation_prompt);
    case ChatFormat::kGemma:
      return RenderGemma(messages, state_->bos_text, add_generation_prompt);
    case ChatFormat::kNone:
      break;
  }
  return FailedPrecondition(
      "tokenizer_config.json has a chat template of no known format "
      "(Llama-3 or Gemma)");
}

Result<std::vector<int32_t>> Tokenizer::EncodeChat(const std::vector<ChatMessage>& messages,
                                                   bool add_generation_prompt) const {
  SPAR_ASSIGN_OR_RETURN(std::string text, RenderChat(messages, add_generation_prompt));
  return Encode(text, /*add_bos=*/false, /*parse_special=*/true);
}

}  // namespace spar
