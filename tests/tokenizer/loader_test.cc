// Tokenizer::FromDir on missing and malformed files: clear errors, no crash.
#include <gtest/gtest.h>

#include "tests/support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace spar {
namespace {

using ::spar::testing::TempDir;
using ::spar::testing::WriteFile;

// A tiny byte-level tokenizer.json: the 256 byte tokens plus "ab".
std::string TinyByteLevelJson(const std::string& extra_model_fields = "") {
  std::string vocab;
  // GPT-2 byte-to-unicode.
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    if (s == "\"" || s == "\\") s = "\\" + s;
    vocab += "\"" + s + "\": " + std::to_string(b) + ", ";
  }
  vocab += "\"ab\": 256";
  return R"({"added_tokens": [{"id": 257, "content": "<|end|>", "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", )" +
         extra_model_fields + R"("vocab": {)" + vocab + R"(}, "merges": ["a b"]}})";
}

TEST(TokenizerLoaderTest, MissingFolder) {
  auto r = Tokenizer::FromDir("/nonexistent/spar/tokenizer");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("/nonexistent/spar/tokenizer"), std::string::npos);
}

TEST(TokenizerLoaderTest, MissingTokenizerJson) {
  TempDir dir;
  auto r = Tokenizer::FromDir(dir.str());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_NE(r.status().message().find("tokenizer.json"), std::string::npos);
}

TEST(TokenizerLoaderTest, NotJson) {
  TempDir dir;
  WriteFile(dir.path() / "tokenizer.json", "{ this is not json");
  auto r = Tokenizer::FromDir(dir.str());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("tokenizer.json"), std::string::npos);
  EXPECT_NE(r.status().message().find("not valid JSON"), std::string::npos);
}

TEST(TokenizerLoaderTest, MissingModelSection) {
  TempDir dir;
  WriteFile(dir.path() / "tokenizer.json", R"({"version": "1.0", "added_tokens": []})");
  auto r = Tokenizer::FromDir(dir.str());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("\"model\""), std::string::npos) << r.status().message();
}

TEST(TokenizerLoaderTest, WrongTypes) {
  TempDir dir;
  for (const char* json : {R"([1, 2, 3])", R"({"model": {"type": "WordPiece", "vocab": {}}})",
                           R"({"model": {"type": "BPE", "vocab": [], "merges": []}})",
                           R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})",
                           R"({"model": {"type": "BPE", "vocab": {}, "merges": []}})"}) {
    WriteFile(dir.path() / "tokenizer.json", json);
    auto r = Tokenizer::FromDir(dir.str());
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << json;
    EXPECT_NE(r.status().message().find("tokenizer.json"), std::string::npos);
  }
}

TEST(TokenizerLoaderTest, TinyByteLevelTokenizer) {
  TempDir dir;
  WriteFile(dir.path() / "tokenizer.json", TinyByteLevelJson());
  auto r = Tokenizer::FromDir(dir.str());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Tokenizer& tok = **r;
  EXPECT_EQ(tok.family(), "llama3");
  EXPECT_EQ(tok.vocab_size(), 258);
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_EQ(tok.Encode("ab<|end|>", /*add_bos=*/true), (std::vector<int32_t>{256, 257}));
  EXPECT_EQ(tok.Encode("abc"), (std::vector<int32_t>{256, 'c'}));
  EXPECT_EQ(tok.Decode({256, 257, 'c'}), "ab<|end|>c");
}

TEST(TokenizerLoaderTest, MergeOutsideVocabulary) {
  TempDir dir;
  std::string json = TinyByteLevelJson();
  json.replace(json.find("\"a b\""), 5, "\"a zz\"");
  WriteFile(dir.path() / "tokenizer.json", json);
  auto r = Tokenizer::FromDir(dir.str());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("merge 0"), std::string::npos) << r.status().message();
}

TEST(TokenizerLoaderTest, BadConfig) {
  TempDir dir;
  WriteFile(dir.path() / "tokenizer.json", TinyByteLevelJson());
  WriteFile(dir.path() / "tokenizer_config.json", "not json");
  auto r = Tokenizer::FromDir(dir.str());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("tokenizer_config.json"), std::string::npos);
  WriteFile(dir.path() / "tokenizer_config.json", R"({"bos_token": "<nope>"})");
  r = Tokenizer::FromDir(dir.str());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("bos_token"), std::string::npos) << r.status().message();
  WriteFile(
      dir.path() / "tokenizer_config.json",
      R"({"bos_token": null, "eos_token": {"content": "<|end|>"}, "chat_template": "{{ x }}"})");
  r = Tokenizer::FromDir(dir.str());
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ((*r)->eos_id(), 257);
  EXPECT_EQ((*r)->bos_id(), -1);
  auto chat = (*r)->RenderChat({{"user", "x"}}, true);
  ASSERT_FALSE(chat.ok());
  EXPECT_EQ(chat.status().code(), StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace spar
