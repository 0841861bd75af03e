// Chat rendering against llama3_chat_vectors.json and the Gemma template.
#include <gtest/gtest.h>

#include "tests/tokenizer/tokenizer_test_util.h"
#include "tokenizer/tokenizer.h"

namespace spar {
namespace {

using ::spar::testing::Ids;
using ::spar::testing::LoadTestJson;

std::vector<ChatMessage> Messages(const nlohmann::json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j)
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  return out;
}

std::string StripPrefix(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0 ? s.substr(prefix.size()) : s;
}

TEST(ChatTemplateTest, Llama3Vectors) {
  SPAR_REQUIRE_TOKENIZER(tok, "llama3");
  int checked = 0;
  for (const auto& e : LoadTestJson("llama3_chat_vectors.json")) {
    const std::string function = e.value("function", "");
    const bool generation_prompt = e.value(
        "add_generation_prompt", function.find("encode_dialog_prompt") != std::string::npos);
    std::vector<ChatMessage> history;
    if (e.contains("history")) history = Messages(e["history"]);
    std::vector<ChatMessage> all = history;
    for (auto& m : Messages(e["messages"])) all.push_back(m);
    if (e["kind"] == "ids") {
      auto ids = tok->EncodeChat(all, generation_prompt);
      ASSERT_TRUE(ids.ok()) << ids.status().ToString();
      std::vector<int32_t> expected = Ids(e["ids"]);
      // ChatFormat.encode_message has no BOS; the template always starts with one.
      if (expected.empty() || expected[0] != tok->bos_id()) ids->erase(ids->begin());
      EXPECT_EQ(*ids, expected) << e["source"];
    } else {
      auto text = tok->RenderChat(all, generation_prompt);
      ASSERT_TRUE(text.ok()) << text.status().ToString();
      std::string rendered = *text;
      if (!history.empty()) {
        auto before = tok->RenderChat(history, false);
        ASSERT_TRUE(before.ok());
        rendered = StripPrefix(rendered, *before);
      } else {
        rendered = StripPrefix(rendered, "<|begin_of_text|>");  // vectors use bos_token ""
      }
      EXPECT_EQ(rendered, e["expected"].get<std::string>()) << e["source"];
    }
    ++checked;
  }
  EXPECT_EQ(checked, 5);
}

TEST(ChatTemplateTest, Llama3GenerationPromptAndErrors) {
  SPAR_REQUIRE_TOKENIZER(tok, "llama3");
  auto no_prompt = tok->RenderChat({{"user", " Hi \n"}, {"assistant", "Hello!"}}, false);
  ASSERT_TRUE(no_prompt.ok());
  EXPECT_EQ(*no_prompt,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>");
  auto bad = tok->RenderChat({{"user", "a"}, {"robot", "b"}}, true);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("message 1"), std::string::npos) << bad.status().message();
  EXPECT_NE(bad.status().message().find("robot"), std::string::npos);
  auto late_system = tok->EncodeChat({{"user", "a"}, {"system", "b"}}, true);
  ASSERT_FALSE(late_system.ok());
  EXPECT_NE(late_system.status().message().find("message 1"), std::string::npos);
}

TEST(ChatTemplateTest, GemmaConversation) {
  SPAR_REQUIRE_TOKENIZER(tok, "gemma");
  std::vector<ChatMessage> chat = {
      {"user", "Hello, who are you?"}, {"assistant", " I am Gemma. "}, {"user", "Nice."}};
  auto text = tok->RenderChat(chat, true);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text,
            "<bos><start_of_turn>user\nHello, who are you?<end_of_turn>\n"
            "<start_of_turn>model\nI am Gemma.<end_of_turn>\n"
            "<start_of_turn>user\nNice.<end_of_turn>\n"
            "<start_of_turn>model\n");
  auto ids = tok->EncodeChat(chat, true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(ids->front(), 2);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 106), 4);
  EXPECT_EQ(std::count(ids->begin(), ids->end(), 107), 3);
  EXPECT_EQ(tok->Decode(*ids), *text);
  auto no_prompt = tok->RenderChat({{"user", "x"}}, false);
  ASSERT_TRUE(no_prompt.ok());
  EXPECT_EQ(*no_prompt, "<bos><start_of_turn>user\nx<end_of_turn>\n");
}

TEST(ChatTemplateTest, GemmaFoldsSystemIntoFirstUserTurn) {
  SPAR_REQUIRE_TOKENIZER(tok, "gemma");
  auto text = tok->RenderChat({{"system", "Be brief. "}, {"user", "Hi"}}, true);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
}

TEST(ChatTemplateTest, GemmaRejectsWhatTheTemplateRejects) {
  SPAR_REQUIRE_TOKENIZER(tok, "gemma");
  struct Case {
    std::vector<ChatMessage> chat;
    std::string index;
  };
  const std::vector<Case> cases = {
      {{{"assistant", "a"}}, "message 0"},
      {{{"user", "a"}, {"user", "b"}}, "message 1"},
      {{{"user", "a"}, {"assistant", "b"}, {"assistant", "c"}}, "message 2"},
      {{{"system", "s"}, {"assistant", "b"}}, "message 1"},
      {{{"user", "a"}, {"tool", "b"}}, "message 1"},
      {{{"user", "a"}, {"system", "b"}}, "message 1"},
  };
  for (const auto& c : cases) {
    auto r = tok->RenderChat(c.chat, true);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.index), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace spar
