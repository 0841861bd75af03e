// The `generator:` config section.
#include <gtest/gtest.h>

#include "services/generator/generator_config.h"

namespace spar {
namespace {

Result<GeneratorConfig> Parse(const std::string& yaml) {
  auto root = ConfigNode::LoadString(yaml, "test.yaml");
  if (!root.ok()) return root.status();
  GeneratorConfig c;
  Status s = ReadGeneratorConfig(root->Child("generator"), &c);
  if (!s.ok()) return s;
  return c;
}

TEST(GeneratorConfigTest, ReadsEveryKey) {
  auto c = Parse(R"(
generator:
  id: gen-3
  model: /models/policy/
  listen: 127.0.0.1:0
  http_listen: 127.0.0.1:8000
  metrics_listen: 127.0.0.1:9100
  max_batch: 8
  max_context: 512
  max_queue: 100
  max_prompt_tokens: 300
  max_samples: 16
  max_prompts: 10
  dtype: bfloat16
  device: cuda:1
  policy_version: 4
  sampling: {temperature: 0.7, top_p: 0.9, top_k: 20, max_new_tokens: 64, seed: 3, stop: ["\n\n"]}
)");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->id, "gen-3");
  EXPECT_EQ(c->name, "policy");
  EXPECT_EQ(c->max_batch, 8);
  EXPECT_EQ(c->limits.max_prompt_tokens, 300);
  EXPECT_EQ(c->limits.max_samples, 16u);
  EXPECT_EQ(c->dtype, "bfloat16");
  EXPECT_EQ(c->device, "cuda:1");
  EXPECT_EQ(c->policy_version, 4u);
  EXPECT_FLOAT_EQ(c->sampling.temperature, 0.7f);
  EXPECT_EQ(c->sampling.top_k, 20);
  ASSERT_EQ(c->sampling.stop.size(), 1u);
}

TEST(GeneratorConfigTest, ErrorsNameTheKey) {
  struct Case {
    std::string yaml, key;
  };
  std::vector<Case> cases = {
      {"generator: {id: x}", "model"},
      {"generator: {model: m, max_batch: 0}", "max_batch"},
      {"generator: {model: m, dtype: fp8}", "dtype"},
      {"generator: {model: m, device: tpu}", "device"},
      {"generator: {model: m, max_batchh: 3}", "max_batchh"},
      {"generator: {model: m, sampling: {top_p: 1.5}}", "top_p"},
      {"generator: {model: m, sampling: {temperature: -1}}", "temperature"},
      {"generator: {model: m, max_context: 100, max_prompt_tokens: 200}", "max_prompt_tokens"},
  };
  for (const auto& c : cases) {
    auto r = Parse(c.yaml);
    ASSERT_FALSE(r.ok()) << c.yaml;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.key), std::string::npos) << r.status().ToString();
  }
}

}  // namespace
}  // namespace spar
