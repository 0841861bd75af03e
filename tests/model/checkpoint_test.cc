#include "model/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/support/test_support.h"

namespace spar {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using ::spar::testing::ReadFile;
using ::spar::testing::TempDir;
using ::spar::testing::WriteFile;
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

std::vector<std::string> ListDir(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& item : fs::directory_iterator(dir)) names.push_back(item.path().filename());
  std::sort(names.begin(), names.end());
  return names;
}

std::unique_ptr<CheckpointReader> MustOpen(const fs::path& dir) {
  auto reader = CheckpointReader::Open(dir.string());
  EXPECT_TRUE(reader.ok()) << reader.status().ToString();
  return reader.ok() ? std::move(reader).value() : nullptr;
}

torch::Tensor MustLoad(const CheckpointReader& reader, const std::string& name,
                       std::optional<torch::ScalarType> dtype = std::nullopt) {
  auto tensor = reader.Load(name, dtype);
  EXPECT_TRUE(tensor.ok()) << tensor.status().ToString();
  return tensor.ok() ? *tensor : torch::Tensor();
}

// One tensor of every LibTorch type safetensors can hold, with awkward
// values (extremes, negative zero, subnormals).
NamedTensors EveryDType() {
  torch::manual_seed(3);
  NamedTensors t;
  t.emplace_back("f64", torch::randn({3, 4}, torch::kDouble) * 1e300);
  t.emplace_back("f32",
                 torch::tensor({0.0f, -0.0f, 1e-42f, 3.4e38f, -1.5f, 7.25f}).reshape({2, 3}));
  t.emplace_back("f16", torch::randn({5}).to(torch::kHalf));
  t.emplace_back("bf16", torch::randn({4, 2}).to(torch::kBFloat16));
  t.emplace_back("i64", torch::tensor({INT64_MIN, int64_t{-1}, int64_t{0}, INT64_MAX}));
  t.emplace_back("i32", torch::tensor({INT32_MIN, -7, 0, INT32_MAX}, torch::kInt));
  t.emplace_back("i16", torch::tensor({-32768, 5, 32767}, torch::kShort));
  t.emplace_back("i8", torch::tensor({-128, 0, 127}, torch::kChar));
  t.emplace_back("u8", torch::tensor({0, 128, 255}, torch::kByte));
  t.emplace_back("bool", torch::tensor({true, false, true, true}));
  return t;
}

TEST(CheckpointTest, DTypeMappingRoundTrips) {
  for (DType dtype : {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64, DType::kI32,
                      DType::kI16, DType::kI8, DType::kU8, DType::kBool}) {
    auto type = ToTorchDType(dtype);
    ASSERT_TRUE(type.ok()) << DTypeName(dtype);
    auto back = FromTorchDType(*type);
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, dtype);
    EXPECT_EQ(torch::elementSize(*type), DTypeSize(dtype));
  }
  EXPECT_EQ(ToTorchDType(DType::kU32).status().code(), StatusCode::kUnimplemented);
  EXPECT_EQ(FromTorchDType(torch::kComplexFloat).status().code(), StatusCode::kUnimplemented);
}

TEST(CheckpointTest, RoundTripsEveryDType) {
  TempDir dir;
  NamedTensors tensors = EveryDType();
  ASSERT_TRUE(WriteCheckpoint(dir.str(), tensors).ok());
  EXPECT_EQ(ListDir(dir.path()), std::vector<std::string>({"model.safetensors"}));

  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  std::vector<std::string> expected_names;
  for (const auto& [name, tensor] : tensors) expected_names.push_back(name);
  std::sort(expected_names.begin(), expected_names.end());
  EXPECT_EQ(reader->names(), expected_names);
  EXPECT_EQ(reader->dir(), dir.str());
  EXPECT_EQ(reader->files(), std::vector<std::string>({"model.safetensors"}));
  uint64_t total = 0;
  for (const auto& [name, tensor] : tensors) {
    SCOPED_TRACE(name);
    torch::Tensor loaded = MustLoad(*reader, name);
    EXPECT_EQ(loaded.scalar_type(), tensor.scalar_type());
    EXPECT_EQ(loaded.sizes(), tensor.sizes());
    EXPECT_TRUE(loaded.is_contiguous());
    EXPECT_TRUE(torch::equal(loaded, tensor));
    EXPECT_EQ(reader->FileOf(name), "model.safetensors");
    total += tensor.numel() * tensor.element_size();
  }
  EXPECT_EQ(reader->total_bytes(), total);
  // The loaded tensor owns its memory: it outlives the reader.
  torch::Tensor kept = MustLoad(*reader, "f32");
  reader.reset();
  EXPECT_TRUE(torch::equal(kept, tensors[1].second));
  // Signed zero and subnormals survive bit for bit.
  EXPECT_TRUE(torch::equal(kept.view(torch::kInt), tensors[1].second.view(torch::kInt)));
}

TEST(CheckpointTest, FilesCarryFormatMetadataInTheGivenOrder) {
  TempDir dir;
  NamedTensors tensors = {
      {"z", torch::ones({2})}, {"a", torch::zeros({3})}, {"m", torch::ones({1})}};
  ASSERT_TRUE(WriteCheckpoint(dir.str(), tensors).ok());
  auto file = SafetensorsFile::Open((dir.path() / "model.safetensors").string());
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->metadata().at("format"), "pt");  // transformers requires it
  ASSERT_EQ((*file)->tensors().size(), 3u);
  EXPECT_EQ((*file)->tensors()[0].name, "z");
  EXPECT_EQ((*file)->tensors()[1].name, "a");
  EXPECT_EQ((*file)->tensors()[2].name, "m");
}

TEST(CheckpointTest, WritesNonContiguousScalarAndEmptyTensors) {
  TempDir dir;
  torch::Tensor base = torch::arange(12, torch::kFloat).reshape({3, 4});
  NamedTensors tensors = {
      {"transposed", base.t()},
      {"strided", base.index({torch::indexing::Slice(), torch::indexing::Slice(0, 4, 2)})},
      {"scalar", torch::tensor(2.5)},
      {"empty", torch::empty({0, 7})}};
  ASSERT_TRUE(WriteCheckpoint(dir.str(), tensors).ok());
  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  for (const auto& [name, tensor] : tensors) {
    SCOPED_TRACE(name);
    torch::Tensor loaded = MustLoad(*reader, name);
    EXPECT_EQ(loaded.sizes(), tensor.sizes());
    EXPECT_TRUE(torch::equal(loaded, tensor));
  }
}

TEST(CheckpointTest, ConvertsOnWriteAndOnLoad) {
  TempDir dir;
  torch::manual_seed(11);
  torch::Tensor weight = torch::randn({8, 16});
  torch::Tensor ids = torch::arange(5);
  CheckpointWriteOptions options;
  options.dtype = torch::kBFloat16;
  ASSERT_TRUE(WriteCheckpoint(dir.str(), {{"w", weight}, {"ids", ids}}, options).ok());
  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->Find("w")->dtype, DType::kBF16);
  EXPECT_EQ(reader->Find("ids")->dtype, DType::kI64);  // integers keep their type
  torch::Tensor as_bf16 = MustLoad(*reader, "w");
  EXPECT_EQ(as_bf16.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(as_bf16, weight.to(torch::kBFloat16)));
  torch::Tensor as_f32 = MustLoad(*reader, "w", torch::kFloat);
  EXPECT_EQ(as_f32.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::equal(as_f32, weight.to(torch::kBFloat16).to(torch::kFloat)));
  EXPECT_TRUE(torch::allclose(as_f32, weight, /*rtol=*/1e-2, /*atol=*/1e-2));
  EXPECT_TRUE(torch::equal(MustLoad(*reader, "ids"), ids));

  CheckpointWriteOptions bad;
  bad.dtype = torch::kInt;
  EXPECT_EQ(WriteCheckpoint(dir.str(), {{"w", weight}}, bad).code(), StatusCode::kInvalidArgument);
}

TEST(CheckpointTest, LoadIntoExistingTensors) {
  TempDir dir;
  torch::Tensor weight = torch::randn({4, 6}).to(torch::kBFloat16);
  ASSERT_TRUE(WriteCheckpoint(dir.str(), {{"layer.weight", weight}}).ok());
  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);

  // A parameter that requires grad, of another dtype.
  torch::Tensor param = torch::zeros({4, 6}).set_requires_grad(true);
  ASSERT_TRUE(reader->LoadInto("layer.weight", param).ok());
  EXPECT_TRUE(torch::equal(param.detach(), weight.to(torch::kFloat)));
  EXPECT_TRUE(param.requires_grad());

  torch::Tensor wrong = torch::zeros({6, 4});
  Status status = reader->LoadInto("layer.weight", wrong);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("shape [4, 6] in the checkpoint, [6, 4] in the destination"),
            std::string::npos)
      << status.message();
  torch::Tensor undefined;
  EXPECT_EQ(reader->LoadInto("layer.weight", undefined).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(reader->LoadInto("missing", param).code(), StatusCode::kNotFound);
}

TEST(CheckpointTest, MissingTensorIsNotFound) {
  TempDir dir;
  ASSERT_TRUE(WriteCheckpoint(dir.str(), {{"a", torch::ones({1})}}).ok());
  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  auto missing = reader->Load("model.norm.weight");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("'model.norm.weight'"), std::string::npos);
  EXPECT_NE(missing.status().message().find(dir.str()), std::string::npos);
  EXPECT_EQ(reader->Find("model.norm.weight"), nullptr);
  EXPECT_FALSE(reader->Contains("model.norm.weight"));
  EXPECT_EQ(reader->FileOf("model.norm.weight"), "");
}

NamedTensors ManyTensors(int count, int64_t elements) {
  NamedTensors t;
  for (int i = 0; i < count; ++i) {
    t.emplace_back("model.layers." + std::to_string(i) + ".weight",
                   torch::full({elements}, static_cast<float>(i)) + torch::arange(elements));
  }
  return t;
}

TEST(CheckpointTest, ConcurrentLoadsFromOneReader) {
  TempDir dir;
  NamedTensors tensors = ManyTensors(16, 4096);
  CheckpointWriteOptions options;
  options.max_shard_bytes = 64 * 1024;
  ASSERT_TRUE(WriteCheckpoint(dir.str(), tensors, options).ok());
  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = 0; i < tensors.size(); ++i) {
          const auto& [name, expected] = tensors[(i + t) % tensors.size()];
          auto loaded = reader->Load(name);
          if (!loaded.ok() || !torch::equal(*loaded, expected)) ++mismatches;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(CheckpointTest, ShardsLikeSavePretrained) {
  TempDir dir;
  NamedTensors tensors = ManyTensors(10, 1000);  // 4000 bytes each
  CheckpointWriteOptions options;
  options.max_shard_bytes = 10000;  // two tensors per shard
  ASSERT_TRUE(WriteCheckpoint(dir.str(), tensors, options).ok());
  std::vector<std::string> expected_files = {
      "model-00001-of-00005.safetensors", "model-00002-of-00005.safetensors",
      "model-00003-of-00005.safetensors", "model-00004-of-00005.safetensors",
      "model-00005-of-00005.safetensors", "model.safetensors.index.json"};
  EXPECT_EQ(ListDir(dir.path()), expected_files);

  json index = json::parse(ReadFile(dir.path() / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 40000);
  ASSERT_EQ(index["weight_map"].size(), 10u);
  EXPECT_EQ(index["weight_map"]["model.layers.0.weight"], "model-00001-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.1.weight"], "model-00001-of-00005.safetensors");
  EXPECT_EQ(index["weight_map"]["model.layers.9.weight"], "model-00005-of-00005.safetensors");

  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->names().size(), 10u);
  EXPECT_EQ(reader->files().size(), 5u);
  EXPECT_EQ(reader->total_bytes(), 40000u);
  for (const auto& [name, tensor] : tensors) {
    EXPECT_TRUE(torch::equal(MustLoad(*reader, name), tensor)) << name;
  }
  EXPECT_EQ(reader->FileOf("model.layers.4.weight"), "model-00003-of-00005.safetensors");
}

TEST(CheckpointTest, OversizedTensorGetsItsOwnShard) {
  TempDir dir;
  NamedTensors tensors = {{"small.a", torch::ones({10})},  // 40 bytes
                          {"huge", torch::ones({1000})},   // 4000 bytes > limit
                          {"small.b", torch::ones({10})}};
  CheckpointWriteOptions options;
  options.max_shard_bytes = 100;
  ASSERT_TRUE(WriteCheckpoint(dir.str(), tensors, options).ok());
  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->FileOf("small.a"), "model-00001-of-00003.safetensors");
  EXPECT_EQ(reader->FileOf("huge"), "model-00002-of-00003.safetensors");
  EXPECT_EQ(reader->FileOf("small.b"), "model-00003-of-00003.safetensors");
}

TEST(CheckpointTest, RewritingReplacesAnEarlierSaveCleanly) {
  TempDir dir;
  WriteFile(dir.path() / "config.json", "{}");  // other files stay
  CheckpointWriteOptions sharded;
  sharded.max_shard_bytes = 10000;
  ASSERT_TRUE(WriteCheckpoint(dir.str(), ManyTensors(10, 1000), sharded).ok());

  WriteFile(dir.path() / "model-extra.safetensors", "not ours");  // not a shard name: kept
  // Fewer shards: the stale ones go.
  ASSERT_TRUE(WriteCheckpoint(dir.str(), ManyTensors(4, 1000), sharded).ok());
  EXPECT_EQ(ListDir(dir.path()),
            std::vector<std::string>({"config.json", "model-00001-of-00002.safetensors",
                                      "model-00002-of-00002.safetensors", "model-extra.safetensors",
                                      "model.safetensors.index.json"}));
  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->names().size(), 4u);

  // One file: the index and every shard go.
  NamedTensors one = ManyTensors(2, 10);
  ASSERT_TRUE(WriteCheckpoint(dir.str(), one).ok());
  EXPECT_EQ(ListDir(dir.path()), std::vector<std::string>({"config.json", "model-extra.safetensors",
                                                           "model.safetensors"}));
  // An open reader of the old shards still reads them (unlinked, not gone).
  EXPECT_TRUE(
      torch::equal(MustLoad(*reader, "model.layers.3.weight"), ManyTensors(4, 1000)[3].second));
  reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  EXPECT_TRUE(torch::equal(MustLoad(*reader, "model.layers.1.weight"), one[1].second));

  // Back to shards: model.safetensors goes (it would shadow the index).
  ASSERT_TRUE(WriteCheckpoint(dir.str(), ManyTensors(3, 1000), sharded).ok());
  EXPECT_FALSE(fs::exists(dir.path() / "model.safetensors"));
  reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->names().size(), 3u);
}

TEST(CheckpointTest, WriteRejectsBadInput) {
  TempDir dir;
  auto message = [&](const NamedTensors& tensors, CheckpointWriteOptions options = {}) {
    Status s = WriteCheckpoint(dir.str(), tensors, options);
    EXPECT_FALSE(s.ok());
    return s.message();
  };
  EXPECT_NE(message({}).find("no tensors"), std::string::npos);
  EXPECT_NE(message({{"a", torch::ones({1})}, {"a", torch::ones({1})}}).find("'a' is given twice"),
            std::string::npos);
  EXPECT_NE(message({{"", torch::ones({1})}}).find("empty name"), std::string::npos);
  EXPECT_NE(message({{"u", torch::Tensor()}}).find("'u' is undefined"), std::string::npos);
  EXPECT_NE(message({{"c", torch::ones({2}, torch::kComplexFloat)}}).find("tensor 'c'"),
            std::string::npos);
  CheckpointWriteOptions zero;
  zero.max_shard_bytes = 0;
  EXPECT_NE(message({{"a", torch::ones({1})}}, zero).find("max_shard_bytes"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(CheckpointTest, OpenRejectsBadFolders) {
  TempDir dir;
  auto error = [&](const fs::path& folder) {
    auto reader = CheckpointReader::Open(folder.string());
    EXPECT_FALSE(reader.ok());
    return reader.ok() ? Status::Ok() : reader.status();
  };
  Status no_folder = error(dir.path() / "absent");
  EXPECT_EQ(no_folder.code(), StatusCode::kNotFound);
  EXPECT_NE(no_folder.message().find("does not exist"), std::string::npos) << no_folder.message();

  Status empty = error(dir.path());
  EXPECT_EQ(empty.code(), StatusCode::kNotFound);
  EXPECT_NE(empty.message().find("has neither model.safetensors nor model.safetensors.index.json"),
            std::string::npos)
      << empty.message();

  // A valid sharded folder to break in various ways.
  CheckpointWriteOptions sharded;
  sharded.max_shard_bytes = 10000;
  ASSERT_TRUE(WriteCheckpoint(dir.str(), ManyTensors(4, 1000), sharded).ok());
  const fs::path index_path = dir.path() / "model.safetensors.index.json";
  const json index = json::parse(ReadFile(index_path));

  WriteFile(index_path, "{\"weight_map\": ");
  Status not_json = error(dir.path());
  EXPECT_EQ(not_json.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(not_json.message().find("is not valid JSON"), std::string::npos) << not_json.message();

  WriteFile(index_path, R"({"metadata": {}})");
  EXPECT_NE(error(dir.path()).message().find("'weight_map' must be an object"), std::string::npos);

  json bad = index;
  bad["weight_map"]["model.layers.0.weight"] = 7;
  WriteFile(index_path, bad.dump());
  EXPECT_NE(
      error(dir.path()).message().find("weight_map['model.layers.0.weight'] must be a file name"),
      std::string::npos);

  bad = index;
  bad["weight_map"]["model.layers.0.weight"] = "model-00009-of-00009.safetensors";
  WriteFile(index_path, bad.dump());
  Status missing_shard = error(dir.path());
  EXPECT_EQ(missing_shard.code(), StatusCode::kNotFound);
  EXPECT_NE(
      missing_shard.message().find("maps tensor 'model.layers.0.weight' to shard "
                                   "'model-00009-of-00009.safetensors', which does not exist"),
      std::string::npos)
      << missing_shard.message();

  bad = index;
  bad["weight_map"]["model.layers.0.weight"] = "model-00002-of-00002.safetensors";
  WriteFile(index_path, bad.dump());
  Status wrong_shard = error(dir.path());
  EXPECT_EQ(wrong_shard.code(), StatusCode::kDataLoss);
  EXPECT_NE(wrong_shard.message().find("which does not contain it"), std::string::npos)
      << wrong_shard.message();

  bad = index;
  bad["weight_map"]["lm_head.weight"] = "model-00001-of-00002.safetensors";
  WriteFile(index_path, bad.dump());
  EXPECT_NE(error(dir.path()).message().find("'lm_head.weight'"), std::string::npos);

  for (const std::string escape : {"../model-00001-of-00002.safetensors", "/etc/passwd", ""}) {
    bad = index;
    bad["weight_map"]["model.layers.0.weight"] = escape;
    WriteFile(index_path, bad.dump());
    EXPECT_NE(error(dir.path()).message().find("is not a file inside the model folder"),
              std::string::npos)
        << escape;
  }

  // A corrupt shard: the shard's own error, naming it.
  WriteFile(index_path, index.dump());
  const fs::path shard = dir.path() / "model-00002-of-00002.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 10);
  Status corrupt = error(dir.path());
  EXPECT_EQ(corrupt.code(), StatusCode::kDataLoss);
  EXPECT_NE(corrupt.message().find("model-00002-of-00002.safetensors"), std::string::npos);
  EXPECT_NE(corrupt.message().find("truncated"), std::string::npos) << corrupt.message();

  // Extra tensors in a shard that the index does not list are ignored.
  ASSERT_TRUE(WriteCheckpoint(dir.str(), ManyTensors(4, 1000), sharded).ok());
  json partial = index;
  partial["weight_map"].erase("model.layers.3.weight");
  WriteFile(index_path, partial.dump());
  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->names().size(), 3u);
  EXPECT_FALSE(reader->Contains("model.layers.3.weight"));
}

// A fake tokenizer folder: WriteHfFolder only copies the files.
fs::path FakeTokenizer(const TempDir& dir) {
  fs::path tok = dir.path() / "tokenizer";
  WriteFile(tok / "tokenizer.json", R"({"version": "1.0", "model": {"type": "BPE"}})");
  WriteFile(tok / "tokenizer_config.json", R"({"bos_token": "<|begin_of_text|>"})");
  WriteFile(tok / "special_tokens_map.json", R"({"eos_token": "<|eot_id|>"})");
  return tok;
}

TEST(CheckpointTest, WritesACompleteHfFolder) {
  TempDir dir;
  fs::path tokenizer = FakeTokenizer(dir);
  auto config = ModelConfig::Preset("llama", "tiny");
  ASSERT_TRUE(config.ok());
  NamedTensors tensors = ManyTensors(3, 64);
  CheckpointWriteOptions options;
  options.dtype = torch::kBFloat16;
  const fs::path out = dir.path() / "models" / "policy";
  ASSERT_TRUE(WriteHfFolder(out.string(), *config, tensors, tokenizer.string(), options).ok());

  EXPECT_EQ(ListDir(out), std::vector<std::string>({"config.json", "generation_config.json",
                                                    "model.safetensors", "special_tokens_map.json",
                                                    "tokenizer.json", "tokenizer_config.json"}));
  EXPECT_EQ(ListDir(out.parent_path()), std::vector<std::string>({"policy"}));  // no leftovers
  auto saved = ModelConfig::FromFile(out.string());
  ASSERT_TRUE(saved.ok()) << saved.status().ToString();
  ModelConfig expected = *config;
  expected.torch_dtype = "bfloat16";  // follows the written dtype
  EXPECT_EQ(*saved, expected);
  json generation = json::parse(ReadFile(out / "generation_config.json"));
  EXPECT_EQ(generation["bos_token_id"], 128000);
  EXPECT_EQ(generation["eos_token_id"], json::array({128001, 128009}));
  EXPECT_EQ(ReadFile(out / "tokenizer.json"), ReadFile(tokenizer / "tokenizer.json"));
  EXPECT_EQ(ReadFile(out / "tokenizer_config.json"), ReadFile(tokenizer / "tokenizer_config.json"));

  auto reader = MustOpen(out);
  ASSERT_NE(reader, nullptr);
  for (const auto& [name, tensor] : tensors) {
    EXPECT_TRUE(torch::equal(MustLoad(*reader, name, torch::kFloat),
                             tensor.to(torch::kBFloat16).to(torch::kFloat)));
  }
  reader.reset();

  // Overwrite: the old folder's contents are gone, nothing left beside it.
  WriteFile(out / "stale.txt", "old");
  ASSERT_TRUE(WriteHfFolder(out.string() + "/", *config, ManyTensors(1, 8), "").ok());
  EXPECT_EQ(ListDir(out), std::vector<std::string>(
                              {"config.json", "generation_config.json", "model.safetensors"}));
  EXPECT_EQ(ListDir(out.parent_path()), std::vector<std::string>({"policy"}));
  reader = MustOpen(out);
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->names().size(), 1u);
}

TEST(CheckpointTest, HfFolderFailuresLeaveNothingBehind) {
  TempDir dir;
  auto config = ModelConfig::Preset("gemma", "tiny");
  ASSERT_TRUE(config.ok());
  const fs::path out = dir.path() / "out";

  fs::path empty_tokenizer = dir.path() / "empty_tokenizer";
  fs::create_directories(empty_tokenizer);
  Status no_tokenizer =
      WriteHfFolder(out.string(), *config, ManyTensors(1, 4), empty_tokenizer.string());
  EXPECT_EQ(no_tokenizer.code(), StatusCode::kNotFound);
  EXPECT_NE(no_tokenizer.message().find("has no tokenizer.json"), std::string::npos)
      << no_tokenizer.message();

  ModelConfig invalid = *config;
  invalid.num_key_value_heads = 3;
  Status bad_config = WriteHfFolder(out.string(), invalid, ManyTensors(1, 4), "");
  EXPECT_EQ(bad_config.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad_config.message().find("num_key_value_heads"), std::string::npos);

  Status no_tensors = WriteHfFolder(out.string(), *config, {}, "");
  EXPECT_EQ(no_tensors.code(), StatusCode::kInvalidArgument);

  EXPECT_EQ(ListDir(dir.path()), std::vector<std::string>({"empty_tokenizer"}));
}

TEST(CheckpointTest, HfFolderWithTheRealTokenizer) {
  fs::path tokenizer = ::spar::testing::TokenizerDir("gemma");
  if (tokenizer.empty()) GTEST_SKIP() << "the gemma tokenizer is not fetched (scripts/setup.sh)";
  TempDir dir;
  auto config = ModelConfig::Preset("gemma", "tiny");
  ASSERT_TRUE(config.ok());
  const fs::path out = dir.path() / "gemma-tiny";
  ASSERT_TRUE(WriteHfFolder(out.string(), *config, ManyTensors(2, 16), tokenizer.string()).ok());
  EXPECT_EQ(fs::file_size(out / "tokenizer.json"), fs::file_size(tokenizer / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(out / "tokenizer_config.json"));
}

// --- An independent reader/writer: Debian's python3 with torch ----------------

fs::path ReferenceScript() {
  return ::spar::testing::SourceDir() / "tests" / "model" / "reference" / "read_safetensors.py";
}

json RunReference(const std::string& mode, const fs::path& path) {
  std::string output;
  int code = ::spar::testing::RunProcess(
      {"/usr/bin/python3", ReferenceScript().string(), mode, path.string()}, &output);
  EXPECT_EQ(code, 0) << output;
  // torch may print warnings before the JSON line; the JSON is the last line.
  std::string last = output;
  while (!last.empty() && last.back() == '\n') last.pop_back();
  size_t newline = last.rfind('\n');
  if (newline != std::string::npos) last = last.substr(newline + 1);
  json result = json::parse(last, nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(result.is_discarded()) << output;
  return result;
}

// Flattened values as doubles (exact for every dtype used here).
std::vector<double> Values(const torch::Tensor& t) {
  torch::Tensor flat = t.reshape({-1}).to(torch::kDouble).contiguous();
  return std::vector<double>(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
}

std::vector<double> Values(const json& values) {
  std::vector<double> out;
  for (const auto& v : values) out.push_back(v.get<double>());
  return out;
}

TEST(CheckpointPythonTest, PythonReadsWhatWeWrite) {
  if (!::spar::testing::PythonHasTorch()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
  TempDir dir;
  NamedTensors tensors = EveryDType();
  tensors.emplace_back("scalar", torch::tensor(-3.75));
  tensors.emplace_back("empty", torch::empty({0, 3}));
  for (uint64_t max_shard : {uint64_t{5} << 30, uint64_t{24}}) {
    SCOPED_TRACE(max_shard);
    const fs::path out = dir.path() / std::to_string(max_shard);
    CheckpointWriteOptions options;
    options.max_shard_bytes = max_shard;
    ASSERT_TRUE(WriteCheckpoint(out.string(), tensors, options).ok());
    json dump = RunReference("dump", out);
    ASSERT_TRUE(dump.is_object());
    EXPECT_EQ(dump["format"], "pt");
    EXPECT_EQ(dump["files"].size() > 1, max_shard == 24);
    ASSERT_EQ(dump["tensors"].size(), tensors.size());
    for (const auto& [name, tensor] : tensors) {
      SCOPED_TRACE(name);
      const json& entry = dump["tensors"][name];
      auto dtype = FromTorchDType(tensor.scalar_type());
      ASSERT_TRUE(dtype.ok());
      EXPECT_EQ(entry["dtype"], std::string(DTypeName(*dtype)));
      EXPECT_EQ(entry["shape"].get<std::vector<int64_t>>(),
                std::vector<int64_t>(tensor.sizes().begin(), tensor.sizes().end()));
      if (tensor.scalar_type() == torch::kLong) {
        // int64 extremes do not survive doubles; compare exactly.
        std::vector<int64_t> expected(tensor.data_ptr<int64_t>(),
                                      tensor.data_ptr<int64_t>() + tensor.numel());
        EXPECT_EQ(entry["values"].get<std::vector<int64_t>>(), expected);
      } else {
        EXPECT_EQ(Values(entry["values"]), Values(tensor));
      }
    }
  }
}

TEST(CheckpointPythonTest, WeReadWhatPythonWrites) {
  if (!::spar::testing::PythonHasTorch()) GTEST_SKIP() << "/usr/bin/python3 has no torch";
  TempDir dir;
  const fs::path file = dir.path() / "model.safetensors";
  json expected = RunReference("write", file);
  ASSERT_TRUE(expected.is_object());
  auto st = SafetensorsFile::Open(file.string());
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  EXPECT_EQ((*st)->metadata().at("writer"), "python");

  auto reader = MustOpen(dir.path());
  ASSERT_NE(reader, nullptr);
  ASSERT_EQ(reader->names().size(), expected["tensors"].size());
  for (const auto& [name, entry] : expected["tensors"].items()) {
    SCOPED_TRACE(name);
    torch::Tensor loaded = MustLoad(*reader, name);
    EXPECT_EQ(std::string(DTypeName(reader->Find(name)->dtype)), entry["dtype"].get<std::string>());
    EXPECT_EQ(std::vector<int64_t>(loaded.sizes().begin(), loaded.sizes().end()),
              entry["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(Values(loaded), Values(entry["values"]));
  }
  // bf16 -> f32 conversion on load matches Python's decoding.
  torch::Tensor bf16 = MustLoad(*reader, "b.bf16", torch::kFloat);
  EXPECT_EQ(Values(bf16), Values(expected["tensors"]["b.bf16"]["values"]));
}

}  // namespace
}  // namespace spar
