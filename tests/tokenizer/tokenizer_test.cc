// Encode/decode parity with Hugging Face tokenizers on public test vectors
// and a transformers.js reference corpus, for Llama-3 and Gemma.
#include "tokenizer/tokenizer.h"

#include <filesystem>

#include <gtest/gtest.h>

#include "tests/tokenizer/tokenizer_test_util.h"

namespace spar {
namespace {

using ::spar::testing::Ids;
using ::spar::testing::LoadTestJson;

// Entries whose note says they hold only for Llama-3.1's special-token names.
bool HoldsForLlama3(const nlohmann::json& entry) {
  const std::string note = entry.value("note", "");
  return note.find("NOT hold") == std::string::npos && note.find("Llama-3.1") == std::string::npos;
}

TEST(TokenizerTest, Llama3PublicVectors) {
  SPAR_REQUIRE_TOKENIZER(tok, "llama3");
  const auto eos = tok->TokenId("<|end_of_text|>");
  ASSERT_TRUE(eos.has_value());
  int checked = 0;
  for (const auto& e : LoadTestJson("llama3_vectors.json")) {
    if (!HoldsForLlama3(e)) continue;
    const std::string text = e["text"];
    std::vector<int32_t> ids =
        tok->Encode(text, e["bos"].get<bool>(), e.value("parse_special", true));
    if (e["eos"].get<bool>()) ids.push_back(*eos);
    EXPECT_EQ(ids, Ids(e["ids"])) << "text: " << text << "\nsource: " << e["source"];
    // Round trip without the added BOS/EOS.
    std::vector<int32_t> plain = tok->Encode(text);
    EXPECT_EQ(tok->Decode(plain), text);
    ++checked;
  }
  EXPECT_EQ(checked, 106);
}

TEST(TokenizerTest, Gemma2PublicVectors) {
  SPAR_REQUIRE_TOKENIZER(tok, "gemma");
  int checked = 0;
  for (const auto& e : LoadTestJson("gemma2_vectors.json")) {
    const std::string text = e["text"];
    const std::vector<int32_t> ids = tok->Encode(text, e["bos"].get<bool>());
    EXPECT_EQ(ids, Ids(e["ids"])) << "text: " << text << "\nsource: " << e["source"];
    if (e.contains("tokens")) {
      std::vector<std::string> tokens;
      for (size_t i = e["bos"].get<bool>() ? 1 : 0; i < ids.size(); ++i)
        tokens.push_back(tok->TokenText(ids[i]));
      EXPECT_EQ(tokens, e["tokens"].get<std::vector<std::string>>()) << text;
    }
    if (e.contains("decoded")) {
      EXPECT_EQ(tok->Decode(ids), e["decoded"].get<std::string>());
    }
    // Gemma decodes every "▁" to a space, so a literal "▁" does not round trip.
    if (text.find("\u2581") == std::string::npos) {
      EXPECT_EQ(tok->Decode(ids, /*skip_special=*/true), text);
    }
    ++checked;
  }
  EXPECT_EQ(checked, 37);
}

class ReferenceCorpusTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceCorpusTest, MatchesTransformersJs) {
  SPAR_REQUIRE_TOKENIZER(tok, GetParam());
  int mismatches = 0;
  int count = 0;
  for (const auto& e : LoadTestJson("reference_" + GetParam() + ".json")) {
    const std::string text = e["text"];
    const std::vector<int32_t> ids = tok->Encode(text);
    ++count;
    if (ids != Ids(e["ids"])) {
      ++mismatches;
      ADD_FAILURE() << "text: " << ::testing::PrintToString(text);
      EXPECT_EQ(ids, Ids(e["ids"]));
    }
    if (GetParam() == "llama3" || text.find("\u2581") == std::string::npos) {
      EXPECT_EQ(tok->Decode(ids), text);  // Gemma: "▁" decodes to " "
    }
  }
  EXPECT_EQ(count, 340);
  EXPECT_EQ(mismatches, 0);
}

INSTANTIATE_TEST_SUITE_P(Families, ReferenceCorpusTest, ::testing::Values("llama3", "gemma"));

TEST(TokenizerTest, Llama3Basics) {
  SPAR_REQUIRE_TOKENIZER(tok, "llama3");
  EXPECT_EQ(tok->family(), "llama3");
  EXPECT_EQ(tok->vocab_size(), 128256);
  EXPECT_EQ(tok->bos_id(), 128000);
  EXPECT_EQ(tok->eos_id(), 128001);  // Meta-Llama-3 (base) config: <|end_of_text|>
  EXPECT_EQ(tok->stop_ids(), (std::vector<int32_t>{128001, 128009}));
  EXPECT_EQ(tok->TokenId("<|eot_id|>"), 128009);
  EXPECT_EQ(tok->TokenText(128009), "<|eot_id|>");
  EXPECT_EQ(tok->TokenText(9906), "Hello");
  EXPECT_EQ(tok->TokenText(1917), "\xC4\xA0world");  // "Ġworld"
  EXPECT_TRUE(tok->IsSpecial(128009));
  EXPECT_FALSE(tok->IsSpecial(9906));
  EXPECT_FALSE(tok->IsSpecial(-1));
  EXPECT_EQ(tok->TokenText(-5), "");
  EXPECT_EQ(tok->TokenText(1 << 30), "");
  EXPECT_FALSE(tok->TokenId("no such token").has_value());
}

TEST(TokenizerTest, GemmaBasics) {
  SPAR_REQUIRE_TOKENIZER(tok, "gemma");
  EXPECT_EQ(tok->family(), "gemma");
  EXPECT_EQ(tok->vocab_size(), 256000);
  EXPECT_EQ(tok->bos_id(), 2);
  EXPECT_EQ(tok->eos_id(), 1);
  EXPECT_EQ(tok->stop_ids(), (std::vector<int32_t>{1, 107}));
  EXPECT_EQ(tok->TokenId("<end_of_turn>"), 107);
  EXPECT_TRUE(tok->IsSpecial(106));
  EXPECT_FALSE(tok->IsSpecial(108));  // "\n" is an added token but not special
}

TEST(TokenizerTest, ParseSpecialOffEncodesSpecialsAsText) {
  SPAR_REQUIRE_TOKENIZER(tok, "llama3");
  const std::string text = "a<|eot_id|>b";
  const auto parsed = tok->Encode(text);
  EXPECT_EQ(parsed, (std::vector<int32_t>{64, 128009, 65}));
  const auto literal = tok->Encode(text, false, /*parse_special=*/false);
  EXPECT_EQ(std::count(literal.begin(), literal.end(), 128009), 0);
  EXPECT_EQ(tok->Decode(literal), text);
  // Decode can drop specials.
  EXPECT_EQ(tok->Decode(parsed, /*skip_special=*/true), "ab");
  // Unknown ids are dropped, as HF does.
  EXPECT_EQ(tok->Decode({64, -3, 999999999, 65}), "ab");
}

TEST(TokenizerTest, GemmaParseSpecialOff) {
  SPAR_REQUIRE_TOKENIZER(tok, "gemma");
  const auto literal = tok->Encode("<start_of_turn>", false, /*parse_special=*/false);
  EXPECT_EQ(std::count(literal.begin(), literal.end(), 106), 0);
  EXPECT_EQ(tok->Decode(literal), "<start_of_turn>");
  EXPECT_EQ(tok->Encode("<start_of_turn>"), (std::vector<int32_t>{106}));
}

TEST(TokenizerTest, InvalidUtf8InputIsRepaired) {
  for (const char* name : {"llama3", "gemma"}) {
    const Tokenizer* tok = ::spar::testing::RealTokenizer(name);
    if (tok == nullptr) GTEST_SKIP() << "tokenizers not found; run scripts/setup.sh";
    EXPECT_EQ(tok->Encode("ab\xFF\xC3 c\xE2\x82"), tok->Encode("ab\uFFFD\uFFFD c\uFFFD")) << name;
  }
}

TEST(TokenizerTest, LongInputsDoNotBreak) {
  SPAR_REQUIRE_TOKENIZER(tok, "llama3");
  // Long whitespace runs exercise the regex's backtracking; long words skip the cache.
  const std::string spaces(200000, ' ');
  const std::string text = "x" + spaces + "y" + std::string(5000, 'z');
  EXPECT_EQ(tok->Decode(tok->Encode(text)), text);
  SPAR_REQUIRE_TOKENIZER(gemma, "gemma");
  EXPECT_EQ(gemma->Decode(gemma->Encode(text)), text);
}

TEST(TokenizerTest, LoadsFromTokenizerJsonAlone) {
  const auto dir = ::spar::testing::TokenizerDir("llama3");
  if (dir.empty()) GTEST_SKIP() << "tokenizer 'llama3' not found; run scripts/setup.sh";
  ::spar::testing::TempDir tmp;
  std::filesystem::copy_file(dir / "tokenizer.json", tmp.path() / "tokenizer.json");
  auto tok = Tokenizer::FromDir(tmp.str());
  ASSERT_TRUE(tok.ok()) << tok.status().ToString();
  EXPECT_EQ((*tok)->family(), "llama3");
  EXPECT_EQ((*tok)->bos_id(), 128000);
  EXPECT_EQ((*tok)->eos_id(), 128001);
  auto chat = (*tok)->RenderChat({{"user", "hi"}}, true);
  ASSERT_TRUE(chat.ok());
  EXPECT_EQ(*chat,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

}  // namespace
}  // namespace spar
