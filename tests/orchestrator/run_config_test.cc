#include "orchestrator/run_config.h"

#include <gtest/gtest.h>

#include "orchestrator/prompt_set.h"
#include "tests/support/test_support.h"

namespace spar {
namespace {

const char* kGood = R"(
log_level: debug
run: {dir: runs/x, iterations: 3, seed: 7, algorithm: gpo}
prompts: {path: examples/prompts.jsonl}
policy:
  model: runs/x/models/policy
  init: {arch: llama, preset: tiny, tokenizer: .cache/tokenizers/llama3}
generation: {samples_per_prompt: 5, temperature: 0.7, top_p: 0.9, max_new_tokens: 32}
)";

TEST(RunConfigTest, GoodConfigLoads) {
  auto c = RunConfig::Parse(kGood, "good.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->run.algorithm, "gpo");
  EXPECT_EQ(c->run.iterations, 3u);
  EXPECT_TRUE(c->policy.init.enabled);
  EXPECT_EQ(c->generation.max_new_tokens, 32);
  EXPECT_EQ(c->log_level, "debug");
}

TEST(RunConfigTest, ShippedExampleConfigIsValid) {
  auto c = RunConfig::Load((testing::SourceDir() / "examples" / "local.yaml").string());
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  auto prompts = PromptSet::Load((testing::SourceDir() / c->prompts.path).string());
  ASSERT_TRUE(prompts.ok()) << prompts.status().ToString();
  EXPECT_GE(prompts->prompts.size(), 3u * c->run.iterations);
}

void ExpectBad(const std::string& yaml, const std::vector<std::string>& fragments) {
  auto c = RunConfig::Parse(yaml, "bad.yaml");
  ASSERT_FALSE(c.ok());
  for (const auto& f : fragments)
    EXPECT_NE(c.status().message().find(f), std::string::npos)
        << "'" << f << "' not in: " << c.status().message();
}

TEST(RunConfigTest, BadConfigsNameTheKey) {
  ExpectBad("policy: {model: m}\n", {"bad.yaml", "prompts", "missing required key"});
  ExpectBad("prompts: {path: p}\n", {"policy", "missing required key"});
  ExpectBad("prompts: {path: p}\npolicy: {model: m}\nrun: {algorithm: ppo}\n",
            {"run.algorithm", "ppo", "sppo, sppo_all_k, gpo, dpo"});
  ExpectBad("prompts: {path: p}\npolicy: {model: m}\ngeneration: {top_p: 1.5}\n",
            {"generation.top_p", "(0, 1]", "1.5"});
  ExpectBad("prompts: {path: p}\npolicy: {model: m}\ngeneration: {samples_per_prompt: 1}\n",
            {"generation.samples_per_prompt", "[2, 64]"});
  ExpectBad("prompts: {path: p}\npolicy: {model: m}\ngeneration: {temprature: 1}\n",
            {"generation.temprature", "unknown key", "temperature"});
  ExpectBad("prompts: {path: p}\npolicy: {model: m, init: {arch: gpt}}\n",
            {"policy.init.arch", "llama, gemma"});
  ExpectBad("prompts: {path: p}\npolicy: {model: m, init: {preset: tiny}}\n",
            {"policy.init.tokenizer", "missing required key"});
  ExpectBad("prompts: {path: p}\npolicy: {model: m}\nlog_level: loud\n", {"log_level", "loud"});
  ExpectBad("prompts: {path: p}\npolicy: {model: m}\nextra: 1\n", {"extra", "unknown key"});
}

TEST(PromptSetTest, ParsesTextAndConversationsAndShardsDeterministically) {
  std::string jsonl;
  for (int i = 0; i < 10; ++i) {
    if (i % 2) jsonl += R"({"prompt": "text )" + std::to_string(i) + "\"}\n";
    else jsonl += R"({"id": )" + std::to_string(i) +
                  R"(, "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u)" +
                  std::to_string(i) + "\"}]}\n";
  }
  jsonl += "\n";
  auto set = PromptSet::Parse(jsonl, "p.jsonl");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  ASSERT_EQ(set->prompts.size(), 10u);
  EXPECT_EQ(set->prompts[0].prompt_id, "0");
  EXPECT_EQ(set->prompts[0].messages.size(), 2u);
  EXPECT_EQ(set->prompts[1].text, "text 1");
  EXPECT_EQ(set->prompts[1].prompt_id.size(), 17u);  // derived p + 16 hex digits
  size_t total = 0;
  for (uint32_t s = 0; s < 3; ++s) {
    auto shard = set->Shard(s, 3);
    total += shard.size();
    EXPECT_GE(shard.size(), 3u);
    for (size_t i = 0; i < shard.size(); ++i) {
      EXPECT_EQ(shard[i].iteration, s);
      EXPECT_EQ(shard[i].prompt_index, i);
    }
  }
  EXPECT_EQ(total, 10u);
  auto again = PromptSet::Parse(jsonl, "p.jsonl");
  EXPECT_EQ(again->Shard(2, 3)[0].prompt_id, set->Shard(2, 3)[0].prompt_id);
}

TEST(PromptSetTest, BadLinesNameTheLine) {
  auto check = [](const std::string& jsonl, const std::string& fragment) {
    auto set = PromptSet::Parse(jsonl, "p.jsonl");
    ASSERT_FALSE(set.ok()) << jsonl;
    EXPECT_NE(set.status().message().find(fragment), std::string::npos) << set.status().message();
  };
  check("{\"prompt\": \"a\"}\nnot json\n", "p.jsonl:2: not valid JSON");
  check("{\"text\": \"a\"}\n", "p.jsonl:1: needs exactly one of");
  check("{\"prompt\": \"\"}\n", "is empty");
  check("{\"messages\": [{\"role\": \"robot\", \"content\": \"x\"}]}\n", "'robot'");
  check("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n",
        "last message");
  check("{\"id\": 1, \"prompt\": \"a\"}\n{\"id\": 1, \"prompt\": \"b\"}\n", "duplicate prompt_id '1'");
  check("", "empty");
}

}  // namespace
}  // namespace spar
