// spar/common/chat.h — a chat message, as prompts carry them between parts.
#pragma once

#include <string>

namespace spar {

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant"
  std::string content;
};

}  // namespace spar
