// IncrementalDecoder: streaming output equals the full decode and never
// carries a broken UTF-8 sequence.
#include <gtest/gtest.h>

#include "tests/tokenizer/tokenizer_test_util.h"
#include "tokenizer/tokenizer.h"

namespace spar {
namespace {

bool IsValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char b = static_cast<unsigned char>(s[i]);
    const size_t len = b < 0x80         ? 1
                       : (b >> 5) == 6  ? 2
                       : (b >> 4) == 14 ? 3
                       : (b >> 3) == 30 ? 4
                                        : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

void ExpectStreamsLikeDecode(const Tokenizer& tok, const std::vector<int32_t>& ids,
                             bool skip_special) {
  IncrementalDecoder decoder(tok, skip_special);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = decoder.Push(id);
    EXPECT_TRUE(IsValidUtf8(piece)) << ::testing::PrintToString(piece);
    streamed += piece;
  }
  streamed += decoder.Flush();
  EXPECT_EQ(streamed, tok.Decode(ids, skip_special));
}

class IncrementalDecoderTest : public ::testing::TestWithParam<std::string> {};

TEST_P(IncrementalDecoderTest, EmojiSplitAcrossByteTokens) {
  SPAR_REQUIRE_TOKENIZER(tok, GetParam());
  // 𓀀 and 𐍈 are not in Gemma's vocabulary: they go through <0xXX> byte tokens.
  const std::string text =
      "Llamas 🦙 and families 👨‍👩‍👧‍👦, 生活的真谛 𓀀𐍈 — ok 🤗!";
  const auto ids = tok->Encode(text);
  IncrementalDecoder decoder(*tok);
  std::string streamed;
  int held_back = 0;
  for (int32_t id : ids) {
    const std::string piece = decoder.Push(id);
    ASSERT_TRUE(IsValidUtf8(piece));
    if (piece.empty()) ++held_back;
    streamed += piece;
  }
  EXPECT_GT(held_back, 0);  // some emoji bytes had to wait for their completion
  EXPECT_EQ(decoder.Flush(), "");
  EXPECT_EQ(streamed, text);
}

TEST_P(IncrementalDecoderTest, WholeReferenceCorpus) {
  SPAR_REQUIRE_TOKENIZER(tok, GetParam());
  for (const auto& e : ::spar::testing::LoadTestJson("reference_" + GetParam() + ".json")) {
    const auto ids = tok->Encode(e["text"].get<std::string>());
    ExpectStreamsLikeDecode(*tok, ids, true);
    ExpectStreamsLikeDecode(*tok, ids, false);
  }
}

TEST_P(IncrementalDecoderTest, FlushReplacesIncompleteBytes) {
  SPAR_REQUIRE_TOKENIZER(tok, GetParam());
  // The first byte token of a 4-byte character, then stop.
  const std::string text = GetParam() == "gemma" ? "𓀀" : "🦙";
  const auto ids = tok->Encode(text);
  ASSERT_GT(ids.size(), 1u);
  IncrementalDecoder decoder(*tok);
  EXPECT_EQ(decoder.Push(ids[0]), "");
  EXPECT_EQ(decoder.Flush(), "\uFFFD");
  // After a flush the decoder starts afresh.
  std::string again;
  for (int32_t id : ids) again += decoder.Push(id);
  EXPECT_EQ(again, text);
}

INSTANTIATE_TEST_SUITE_P(Families, IncrementalDecoderTest, ::testing::Values("llama3", "gemma"));

}  // namespace
}  // namespace spar
