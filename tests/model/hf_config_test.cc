#include "model/hf_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tests/support/test_support.h"

namespace spar {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::spar::testing::TempDir;

// config.json of meta-llama/Meta-Llama-3-8B-Instruct as published.
constexpr char kLlama3_8BInstruct[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": 128009,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 8192,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": null,
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.40.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

// config.json of meta-llama/Llama-3.1-8B-Instruct: eos as a list, llama3
// RoPE scaling.
constexpr char kLlama31_8BInstruct[] = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

// config.json of google/gemma-2b: hidden_act "gelu" (meaning the tanh
// approximation), no tie_word_embeddings key (Gemma ties by default).
constexpr char kGemma2B[] = R"({
  "architectures": ["GemmaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 2,
  "eos_token_id": 1,
  "head_dim": 256,
  "hidden_act": "gelu",
  "hidden_size": 2048,
  "initializer_range": 0.02,
  "intermediate_size": 16384,
  "max_position_embeddings": 8192,
  "model_type": "gemma",
  "num_attention_heads": 8,
  "num_hidden_layers": 18,
  "num_key_value_heads": 1,
  "pad_token_id": 0,
  "rms_norm_eps": 1e-06,
  "rope_scaling": null,
  "rope_theta": 10000.0,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.38.0.dev0",
  "use_cache": true,
  "vocab_size": 256000
})";

ModelConfig Parse(const std::string& text) {
  auto config = ModelConfig::FromJson(json::parse(text), "config.json");
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return config.ok() ? *config : ModelConfig();
}

ModelConfig MustPreset(const std::string& arch, const std::string& name) {
  auto config = ModelConfig::Preset(arch, name);
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return config.ok() ? *config : ModelConfig();
}

// Parses `j` expecting an InvalidArgument whose message contains `needle`.
void ExpectError(const json& j, const std::string& needle) {
  auto config = ModelConfig::FromJson(j, "bad.json");
  ASSERT_FALSE(config.ok()) << "expected an error containing: " << needle;
  EXPECT_EQ(config.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(config.status().message().find(needle), std::string::npos)
      << "message: " << config.status().message() << "\nexpected: " << needle;
  EXPECT_EQ(config.status().message().rfind("bad.json", 0), 0u) << config.status().message();
}

TEST(HfConfigTest, ParsesMetaLlama3_8BInstruct) {
  ModelConfig c = Parse(kLlama3_8BInstruct);
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);  // derived: no head_dim key
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.rope_scaling.type.empty());
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({128009}));  // the int form
  EXPECT_FALSE(c.pad_token_id.has_value());
  EXPECT_EQ(c.hidden_activation, "silu");
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_FALSE(c.attention_bias);
  EXPECT_EQ(c.NumParameters(), 8030261248);

  // The preset has the same shape (its eos list is generation_config.json's).
  ModelConfig preset = MustPreset("llama", "llama3-8b");
  preset.eos_token_ids = c.eos_token_ids;
  EXPECT_EQ(preset, c);
}

TEST(HfConfigTest, ParsesLlama31_8BInstructWithEosListAndRopeScaling) {
  ModelConfig c = Parse(kLlama31_8BInstruct);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({128001, 128008, 128009}));
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c, MustPreset("llama", "llama3.1-8b"));
}

TEST(HfConfigTest, ParsesGemma2B) {
  ModelConfig c = Parse(kGemma2B);
  EXPECT_EQ(c.architecture, "gemma");
  EXPECT_EQ(c.head_dim, 256);
  EXPECT_EQ(c.num_key_value_heads, 1);
  EXPECT_TRUE(c.tie_word_embeddings);  // Gemma's default
  EXPECT_EQ(c.hidden_activation, "gelu_pytorch_tanh");
  EXPECT_EQ(c.bos_token_id, 2);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({1}));
  EXPECT_EQ(c.pad_token_id, 0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.NumParameters(), 2506172416);
  EXPECT_EQ(c, MustPreset("gemma", "gemma-2b"));

  // An explicit hidden_activation wins over the default.
  json j = json::parse(kGemma2B);
  j["hidden_activation"] = "gelu";
  EXPECT_EQ(Parse(j.dump()).hidden_activation, "gelu");
}

TEST(HfConfigTest, ReadsTransformers5Spellings) {
  json j = json::parse(kLlama31_8BInstruct);
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j.erase("torch_dtype");
  j["dtype"] = "bfloat16";
  j["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                          {"factor", 8.0},           {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  EXPECT_EQ(Parse(j.dump()), MustPreset("llama", "llama3.1-8b"));

  json plain = json::parse(kLlama3_8BInstruct);
  plain.erase("rope_theta");
  plain["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
  ModelConfig c = Parse(plain.dump());
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.rope_scaling.type.empty());
}

TEST(HfConfigTest, FallsBackToArchitecturesAndDefaults) {
  json j = {{"architectures", {"LlamaForCausalLM"}},
            {"hidden_size", 64},
            {"intermediate_size", 128},
            {"num_hidden_layers", 2},
            {"num_attention_heads", 4},
            {"vocab_size", 1000}};
  ModelConfig c = Parse(j.dump());
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.bos_token_id, 1);  // LlamaConfig's defaults
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>({2}));
  EXPECT_EQ(c.hidden_activation, "silu");
  EXPECT_EQ(c.torch_dtype, "float32");

  // Explicit nulls mean "none"; a negative pad id too.
  j["bos_token_id"] = nullptr;
  j["eos_token_id"] = nullptr;
  j["pad_token_id"] = -1;
  c = Parse(j.dump());
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_FALSE(c.pad_token_id.has_value());
  EXPECT_EQ(c.primary_eos_token_id(), -1);
}

TEST(HfConfigTest, RejectsBadConfigsNamingTheKey) {
  const json base = json::parse(kLlama3_8BInstruct);
  auto with = [&](const std::string& key, const json& value) {
    json j = base;
    j[key] = value;
    return j;
  };
  auto without = [&](const std::string& key) {
    json j = base;
    j.erase(key);
    return j;
  };
  ExpectError(without("hidden_size"), "key 'hidden_size' is missing");
  ExpectError(without("vocab_size"), "key 'vocab_size' is missing");
  ExpectError(without("num_attention_heads"), "key 'num_attention_heads' is missing");
  json no_type = without("model_type");
  no_type.erase("architectures");
  ExpectError(no_type, "key 'model_type' is missing");
  ExpectError(with("hidden_size", "4096"), "key 'hidden_size' must be an integer, got string");
  ExpectError(with("hidden_size", 4096.5), "key 'hidden_size' must be an integer, got float");
  ExpectError(with("rms_norm_eps", "small"), "key 'rms_norm_eps' must be a number");
  ExpectError(with("tie_word_embeddings", 1), "key 'tie_word_embeddings' must be true or false");
  ExpectError(with("hidden_act", 3), "key 'hidden_act' must be a string");
  ExpectError(with("eos_token_id", "</s>"), "key 'eos_token_id' must be an integer");
  ExpectError(with("eos_token_id", json::array({1, "x"})),
              "key 'eos_token_id' must be an integer or a list of integers");
  ExpectError(with("num_attention_heads", 30),
              "key 'num_attention_heads' (30) must divide hidden_size (4096)");
  ExpectError(with("num_key_value_heads", 5),
              "key 'num_key_value_heads' (5) must divide num_attention_heads (32)");
  ExpectError(with("num_hidden_layers", 0), "key 'num_hidden_layers' must be positive");
  ExpectError(with("intermediate_size", -1), "key 'intermediate_size' must be positive");
  ExpectError(with("model_type", "gemma2"),
              "key 'model_type' 'gemma2' is not supported (allowed: llama, gemma)");
  json bad_arch = without("model_type");
  bad_arch["architectures"] = {"MistralForCausalLM"};
  ExpectError(bad_arch, "key 'architectures' 'MistralForCausalLM' is not supported");
  ExpectError(with("hidden_act", "relu"),
              "key 'hidden_act' 'relu' is not supported (allowed: silu");
  ExpectError(with("torch_dtype", "float64"), "key 'torch_dtype' 'float64' is not supported");
  ExpectError(with("eos_token_id", 128256),
              "key 'eos_token_id' (128256) must be in [0, vocab_size=128256)");
  ExpectError(with("bos_token_id", -5), "key 'bos_token_id' (-5) must be in [0");
  ExpectError(with("rms_norm_eps", 0), "key 'rms_norm_eps' must be positive");
  ExpectError(with("rope_scaling", {{"rope_type", "yarn"}, {"factor", 4.0}}),
              "key 'rope_scaling.rope_type' 'yarn' is not supported (allowed: default, llama3)");
  ExpectError(with("rope_scaling", {{"type", "linear"}, {"factor", 4.0}}),
              "key 'rope_scaling.type' 'linear' is not supported");
  ExpectError(with("rope_scaling", {{"rope_type", "llama3"}, {"low_freq_factor", 1.0}}),
              "key 'rope_scaling.factor' is missing");
  ExpectError(with("rope_scaling", {{"rope_type", "llama3"},
                                    {"factor", 0.5},
                                    {"low_freq_factor", 1.0},
                                    {"high_freq_factor", 4.0},
                                    {"original_max_position_embeddings", 8192}}),
              "key 'rope_scaling.factor' must be >= 1");
  ExpectError(with("rope_scaling", "llama3"), "key 'rope_scaling' must be an object or null");
  ExpectError(with("mlp_bias", true), "key 'mlp_bias' true is not supported");
  ExpectError(json::array({1, 2}), "config must be a JSON object");
}

TEST(HfConfigTest, FromFileReadsFilesAndFolders) {
  TempDir dir;
  ::spar::testing::WriteFile(dir.path() / "config.json", kGemma2B);
  auto by_file = ModelConfig::FromFile((dir.path() / "config.json").string());
  ASSERT_TRUE(by_file.ok()) << by_file.status().ToString();
  auto by_folder = ModelConfig::FromFile(dir.str());
  ASSERT_TRUE(by_folder.ok()) << by_folder.status().ToString();
  EXPECT_EQ(*by_file, *by_folder);

  auto missing = ModelConfig::FromFile((dir.path() / "nope.json").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);

  ::spar::testing::WriteFile(dir.path() / "broken.json", "{\"hidden_size\": ");
  auto broken = ModelConfig::FromFile((dir.path() / "broken.json").string());
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(broken.status().message().find("broken.json: not valid JSON"), std::string::npos)
      << broken.status().message();

  json bad = json::parse(kGemma2B);
  bad["num_key_value_heads"] = 3;
  ::spar::testing::WriteFile(dir.path() / "bad.json", bad.dump());
  auto invalid = ModelConfig::FromFile((dir.path() / "bad.json").string());
  ASSERT_FALSE(invalid.ok());
  EXPECT_NE(invalid.status().message().find("bad.json: key 'num_key_value_heads'"),
            std::string::npos)
      << invalid.status().message();
}

TEST(HfConfigTest, PresetsAreValidAndShapedAsDocumented) {
  for (const std::string arch : {"llama", "gemma"}) {
    ASSERT_FALSE(ModelConfig::PresetNames(arch).empty());
    for (const auto& name : ModelConfig::PresetNames(arch)) {
      SCOPED_TRACE(arch + "/" + name);
      ModelConfig c = MustPreset(arch, name);
      EXPECT_TRUE(c.Validate().ok()) << c.Validate().ToString();
      EXPECT_EQ(c.architecture, arch);
      EXPECT_GT(c.NumParameters(), 0);
    }
  }
  ModelConfig tiny = MustPreset("llama", "tiny");
  EXPECT_EQ(tiny.hidden_size, 64);
  EXPECT_EQ(tiny.num_hidden_layers, 2);
  EXPECT_EQ(tiny.num_attention_heads, 4);
  EXPECT_EQ(tiny.num_key_value_heads, 2);
  EXPECT_EQ(tiny.vocab_size, 128256);  // the real Llama-3 tokenizer
  EXPECT_EQ(tiny.rope_scaling.type, "llama3");
  EXPECT_FALSE(tiny.tie_word_embeddings);
  EXPECT_EQ(tiny.bos_token_id, 128000);
  EXPECT_EQ(tiny.eos_token_ids, std::vector<int32_t>({128001, 128009}));
  EXPECT_EQ(tiny.hidden_activation, "silu");
  EXPECT_TRUE(MustPreset("llama", "tiny-tied").tie_word_embeddings);
  ModelConfig tied = MustPreset("llama", "tiny-tied");
  tied.tie_word_embeddings = false;
  EXPECT_EQ(tied, tiny);

  ModelConfig gemma = MustPreset("gemma", "tiny");
  EXPECT_EQ(gemma.vocab_size, 256000);      // the real Gemma tokenizer
  EXPECT_EQ(gemma.num_key_value_heads, 1);  // MQA
  EXPECT_TRUE(gemma.tie_word_embeddings);
  EXPECT_EQ(gemma.hidden_activation, "gelu_pytorch_tanh");
  EXPECT_EQ(gemma.primary_eos_token_id(), 1);

  EXPECT_EQ(MustPreset("llama", "small").hidden_size, 256);
  EXPECT_EQ(MustPreset("llama", "llama3-8b").NumParameters(), 8030261248);

  auto unknown = ModelConfig::Preset("llama", "huge");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("allowed: tiny, tiny-tied, small"), std::string::npos)
      << unknown.status().message();
  auto bad_arch = ModelConfig::Preset("mistral", "tiny");
  ASSERT_FALSE(bad_arch.ok());
  EXPECT_NE(bad_arch.status().message().find("allowed: llama, gemma"), std::string::npos);
}

TEST(HfConfigTest, ToJsonRoundTripsEveryPreset) {
  for (const std::string arch : {"llama", "gemma"}) {
    for (const auto& name : ModelConfig::PresetNames(arch)) {
      SCOPED_TRACE(arch + "/" + name);
      ModelConfig c = MustPreset(arch, name);
      json j = c.ToJson();
      // Through text, as a file would go.
      auto back = ModelConfig::FromJson(json::parse(j.dump(2)), "round trip");
      ASSERT_TRUE(back.ok()) << back.status().ToString();
      EXPECT_EQ(*back, c);
      EXPECT_EQ(j["model_type"], arch);
      EXPECT_EQ(j["architectures"][0], arch == "llama" ? "LlamaForCausalLM" : "GemmaForCausalLM");
      EXPECT_EQ(j["torch_dtype"], c.torch_dtype);
      EXPECT_EQ(j["head_dim"], c.head_dim);
      if (!c.rope_scaling.type.empty()) {
        // transformers validates these as floats / an int.
        EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
        EXPECT_TRUE(j["rope_scaling"]["factor"].is_number_float());
        EXPECT_TRUE(j["rope_scaling"]["low_freq_factor"].is_number_float());
        EXPECT_TRUE(j["rope_scaling"]["high_freq_factor"].is_number_float());
        EXPECT_TRUE(j["rope_scaling"]["original_max_position_embeddings"].is_number_integer());
      } else {
        EXPECT_TRUE(j["rope_scaling"].is_null());
      }
      EXPECT_TRUE(j["rope_theta"].is_number_float());
    }
  }
  json llama = MustPreset("llama", "tiny").ToJson();
  EXPECT_EQ(llama["eos_token_id"], json::array({128001, 128009}));
  EXPECT_EQ(llama["hidden_act"], "silu");
  json gemma = MustPreset("gemma", "gemma-2b").ToJson();
  EXPECT_EQ(gemma["eos_token_id"], 1);  // a single id stays an int
  EXPECT_EQ(gemma["hidden_activation"], "gelu_pytorch_tanh");
  EXPECT_EQ(gemma["pad_token_id"], 0);

  // A parsed published config survives the round trip as well.
  ModelConfig parsed = Parse(kLlama31_8BInstruct);
  auto back = ModelConfig::FromJson(parsed.ToJson(), "round trip");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, parsed);

  json generation = MustPreset("llama", "llama3-8b").GenerationConfigJson();
  EXPECT_EQ(generation["bos_token_id"], 128000);
  EXPECT_EQ(generation["eos_token_id"], json::array({128001, 128009}));
  EXPECT_FALSE(generation.contains("pad_token_id"));
}

// The tiny presets use the real tokenizers, so their vocab sizes must match.
TEST(HfConfigTest, PresetVocabularyMatchesTheRealTokenizers) {
  for (const auto& [arch, tokenizer] :
       std::vector<std::pair<std::string, std::string>>{{"llama", "llama3"}, {"gemma", "gemma"}}) {
    fs::path dir = ::spar::testing::TokenizerDir(tokenizer);
    if (dir.empty()) GTEST_SKIP() << "tokenizer " << tokenizer << " not fetched (scripts/setup.sh)";
    json t = json::parse(::spar::testing::ReadFile(dir / "tokenizer.json"));
    int64_t size = static_cast<int64_t>(t["model"]["vocab"].size());
    for (const auto& added : t["added_tokens"])
      size = std::max<int64_t>(size, added["id"].get<int64_t>() + 1);
    ModelConfig c = MustPreset(arch, "tiny");
    EXPECT_EQ(c.vocab_size, size) << arch;
    EXPECT_LT(*c.bos_token_id, size);
    for (int32_t eos : c.eos_token_ids) EXPECT_LT(eos, size);
  }
}

}  // namespace
}  // namespace spar
