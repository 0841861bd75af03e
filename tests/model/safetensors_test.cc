#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "tests/support/test_support.h"

namespace spar {
namespace {

namespace fs = std::filesystem;
using ::spar::testing::TempDir;

// 8-byte little-endian length + header + `data_bytes` bytes of data.
std::string RawFile(const std::string& header, size_t data_bytes, uint64_t length_override = 0) {
  uint64_t n = length_override ? length_override : header.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += header;
  out.append(data_bytes, '\x5a');
  return out;
}

void WriteBytes(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string ReadBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Opens a file made of `bytes` and returns the error (the test fails if it
// opened).
Status OpenError(const TempDir& dir, const std::string& bytes) {
  fs::path path = dir.path() / "bad.safetensors";
  WriteBytes(path, bytes);
  auto file = SafetensorsFile::Open(path.string());
  EXPECT_FALSE(file.ok()) << "a corrupt file opened";
  return file.ok() ? Status::Ok() : file.status();
}

const DType kAllDTypes[] = {DType::kF64, DType::kF32, DType::kF16, DType::kBF16,   DType::kI64,
                            DType::kI32, DType::kI16, DType::kI8,  DType::kU8,     DType::kBool,
                            DType::kU16, DType::kU32, DType::kU64, DType::kF8E4M3, DType::kF8E5M2};

TEST(SafetensorsDTypeTest, NamesAndSizesRoundTrip) {
  for (DType dtype : kAllDTypes) {
    auto parsed = ParseDType(DTypeName(dtype));
    ASSERT_TRUE(parsed.ok()) << DTypeName(dtype);
    EXPECT_EQ(*parsed, dtype);
  }
  EXPECT_EQ(DTypeName(DType::kBF16), "BF16");
  EXPECT_EQ(DTypeName(DType::kBool), "BOOL");
  EXPECT_EQ(DTypeSize(DType::kF64), 8u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBool), 1u);
  EXPECT_EQ(DTypeSize(DType::kU32), 4u);
  auto bad = ParseDType("f32");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown dtype 'f32'"), std::string::npos);
  EXPECT_NE(bad.status().message().find("BF16"), std::string::npos);  // lists allowed values
}

TEST(SafetensorsTest, RoundTripsEveryDType) {
  TempDir dir;
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<TensorView> views;
  std::mt19937 rng(7);
  for (DType dtype : kAllDTypes) {
    std::vector<int64_t> shape = {3, 5};
    std::vector<uint8_t> bytes(15 * DTypeSize(dtype));
    for (auto& b : bytes) b = static_cast<uint8_t>(rng());
    if (dtype == DType::kBool) {
      for (auto& b : bytes) b &= 1;
    }
    buffers.push_back(std::move(bytes));
    views.push_back(TensorView{"t." + std::string(DTypeName(dtype)), dtype, shape,
                               buffers.back().data(), buffers.back().size()});
  }
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"step", "42"}};
  fs::path path = dir.path() / "all.safetensors";
  ASSERT_TRUE(WriteSafetensors(path.string(), views, metadata).ok());

  auto file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ((*file)->metadata(), metadata);
  EXPECT_EQ((*file)->path(), path.string());
  EXPECT_EQ((*file)->file_size(), fs::file_size(path));
  ASSERT_EQ((*file)->tensors().size(), views.size());
  for (size_t i = 0; i < views.size(); ++i) {
    const TensorEntry& entry = (*file)->tensors()[i];  // file order == written order
    EXPECT_EQ(entry.name, views[i].name);
    EXPECT_EQ(entry.dtype, views[i].dtype);
    EXPECT_EQ(entry.shape, views[i].shape);
    EXPECT_EQ(entry.nbytes, views[i].nbytes);
    EXPECT_EQ(entry.numel(), 15);
    EXPECT_EQ(std::memcmp(entry.data, views[i].data, entry.nbytes), 0) << entry.name;
    EXPECT_EQ((*file)->Find(entry.name), &entry);
    // Paging hints change nothing a reader can see.
    (*file)->Prefetch(entry);
    (*file)->Release(entry);
    EXPECT_EQ(std::memcmp(entry.data, views[i].data, entry.nbytes), 0) << entry.name;
  }
  EXPECT_EQ((*file)->Find("missing"), nullptr);
}

TEST(SafetensorsTest, ScalarsAndEmptyTensors) {
  TempDir dir;
  float scalar = 3.5f;
  std::vector<TensorView> views = {
      {"scalar", DType::kF32, {}, &scalar, 4},
      {"empty", DType::kF32, {0, 4}, nullptr, 0},
      {"also_empty", DType::kI64, {3, 0}, nullptr, 0},
  };
  fs::path path = dir.path() / "edge.safetensors";
  ASSERT_TRUE(WriteSafetensors(path.string(), views).ok());
  auto file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  const TensorEntry* s = (*file)->Find("scalar");
  ASSERT_NE(s, nullptr);
  EXPECT_TRUE(s->shape.empty());
  EXPECT_EQ(s->numel(), 1);
  float read;
  std::memcpy(&read, s->data, 4);
  EXPECT_EQ(read, 3.5f);
  ASSERT_NE((*file)->Find("empty"), nullptr);
  EXPECT_EQ((*file)->Find("empty")->nbytes, 0u);
  EXPECT_EQ((*file)->Find("also_empty")->numel(), 0);
  EXPECT_TRUE((*file)->metadata().empty());
}

TEST(SafetensorsTest, NoTensorsAtAll) {
  TempDir dir;
  fs::path path = dir.path() / "none.safetensors";
  ASSERT_TRUE(WriteSafetensors(path.string(), {}).ok());
  // The reference writer's output for an empty dict: "{}" padded to 8.
  EXPECT_EQ(ReadBytes(path), RawFile("{}      ", 0));
  auto file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_TRUE((*file)->tensors().empty());
}

TEST(SafetensorsTest, MatchesTheReferenceWriterByteForByte) {
  // One F32 tensor [1, 2, 3] = 0..5: the reference writer emits exactly this
  // header (64 bytes, so no padding), then the data.
  TempDir dir;
  std::vector<float> values = {0, 1, 2, 3, 4, 5};
  fs::path path = dir.path() / "ref.safetensors";
  ASSERT_TRUE(
      WriteSafetensors(path.string(), {{"attn.0", DType::kF32, {1, 2, 3}, values.data(), 24}})
          .ok());
  std::string expected =
      RawFile(R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})", 0);
  expected.append(reinterpret_cast<const char*>(values.data()), 24);
  EXPECT_EQ(ReadBytes(path), expected);
}

TEST(SafetensorsTest, HeaderIsPaddedAndTensorsAligned) {
  TempDir dir;
  std::vector<double> f64(3, 1.0);
  std::vector<float> f32(5, 2.0f);
  std::vector<uint16_t> bf16(7, 0x3f80);
  fs::path path = dir.path() / "aligned.safetensors";
  ASSERT_TRUE(WriteSafetensors(path.string(),
                               {{"x", DType::kF64, {3}, f64.data(), 24},
                                {"yy", DType::kF32, {5}, f32.data(), 20},
                                {"zzz", DType::kBF16, {7}, bf16.data(), 14}},
                               {{"format", "pt"}})
                  .ok());
  std::string bytes = ReadBytes(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  auto file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  for (const auto& entry : (*file)->tensors()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(entry.data) % DTypeSize(entry.dtype), 0u) << entry.name;
  }
}

TEST(SafetensorsTest, WriterRejectsBadInput) {
  TempDir dir;
  std::string path = (dir.path() / "w.safetensors").string();
  float x[2] = {1, 2};
  auto message = [&](const std::vector<TensorView>& views) {
    Status s = WriteSafetensors(path, views);
    EXPECT_FALSE(s.ok());
    return s.message();
  };
  EXPECT_NE(message({{"a", DType::kF32, {3}, x, 8}}).find("needs 12"), std::string::npos);
  EXPECT_NE(message({{"a", DType::kF32, {2}, x, 8}, {"a", DType::kF32, {2}, x, 8}})
                .find("'a' is given twice"),
            std::string::npos);
  EXPECT_NE(message({{"", DType::kF32, {2}, x, 8}}).find("empty name"), std::string::npos);
  EXPECT_NE(message({{"__metadata__", DType::kF32, {2}, x, 8}}).find("reserved"),
            std::string::npos);
  EXPECT_NE(message({{"neg", DType::kF32, {-2}, x, 8}}).find("bad shape"), std::string::npos);
  EXPECT_NE(message({{"null", DType::kF32, {2}, nullptr, 8}}).find("no data"), std::string::npos);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir.path())) << "a failed write left files behind";
}

TEST(SafetensorsTest, StreamingWriterChecksByteCounts) {
  TempDir dir;
  std::string path = (dir.path() / "s.safetensors").string();
  std::vector<uint8_t> bytes(64, 1);
  {
    auto writer = SafetensorsWriter::Create(
        path, {{"a", DType::kF32, {4}}, {"empty", DType::kF32, {0}}, {"b", DType::kU8, {8}}});
    ASSERT_TRUE(writer.ok()) << writer.status().ToString();
    EXPECT_EQ((*writer)->next_tensor(), "a");
    ASSERT_TRUE((*writer)->Append(bytes.data(), 10).ok());  // a tensor in pieces
    EXPECT_EQ((*writer)->next_tensor(), "a");
    ASSERT_TRUE((*writer)->Append(bytes.data(), 6).ok());
    EXPECT_EQ((*writer)->next_tensor(), "b");  // the empty one needs nothing
    Status too_much = (*writer)->Append(bytes.data(), 9);
    EXPECT_EQ(too_much.code(), StatusCode::kOutOfRange);
    ASSERT_TRUE((*writer)->Append(bytes.data(), 4).ok());
    Status short_write = (*writer)->Finish();
    EXPECT_EQ(short_write.code(), StatusCode::kFailedPrecondition);
    EXPECT_NE(short_write.message().find("tensor 'b' is incomplete"), std::string::npos);
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir.path()));
  {
    // Abandoned mid-way: the destructor cleans up; nothing at `path`.
    auto writer = SafetensorsWriter::Create(path, {{"a", DType::kF32, {4}}});
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(bytes.data(), 8).ok());
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
  {
    auto writer = SafetensorsWriter::Create(path, {{"a", DType::kF32, {4}}});
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(bytes.data(), 16).ok());
    ASSERT_TRUE((*writer)->Finish().ok());
    EXPECT_EQ((*writer)->file_size(), fs::file_size(path));
    EXPECT_EQ((*writer)->Finish().code(), StatusCode::kFailedPrecondition);
  }
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_EQ((*file)->tensors().size(), 1u);
}

TEST(SafetensorsTest, OverwritesAtomically) {
  TempDir dir;
  std::string path = (dir.path() / "o.safetensors").string();
  float one = 1, two = 2;
  ASSERT_TRUE(WriteSafetensors(path, {{"v", DType::kF32, {}, &one, 4}}).ok());
  auto old_file = SafetensorsFile::Open(path);
  ASSERT_TRUE(old_file.ok());
  ASSERT_TRUE(WriteSafetensors(path, {{"v", DType::kF32, {}, &two, 4}}).ok());
  // A reader of the old file keeps seeing the old bytes (the new file is a
  // new inode), and a new reader sees the new ones.
  float value;
  std::memcpy(&value, (*old_file)->Find("v")->data, 4);
  EXPECT_EQ(value, 1.0f);
  auto new_file = SafetensorsFile::Open(path);
  ASSERT_TRUE(new_file.ok());
  std::memcpy(&value, (*new_file)->Find("v")->data, 4);
  EXPECT_EQ(value, 2.0f);
}

TEST(SafetensorsTest, MissingFileIsNotFound) {
  TempDir dir;
  auto file = SafetensorsFile::Open((dir.path() / "nope.safetensors").string());
  ASSERT_FALSE(file.ok());
  EXPECT_EQ(file.status().code(), StatusCode::kNotFound);
  EXPECT_NE(file.status().message().find("nope.safetensors"), std::string::npos);
  auto folder = SafetensorsFile::Open(dir.str());
  ASSERT_FALSE(folder.ok());
  EXPECT_EQ(folder.status().code(), StatusCode::kUnavailable);
}

// --- Corrupt files: each rejected with a message naming the problem --------

struct CorruptCase {
  const char* label;
  std::string bytes;
  const char* expected;  // substring of the message
};

TEST(SafetensorsCorruptTest, EachKindIsRejectedWithAClearMessage) {
  const std::string ok_entry = R"("w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::vector<CorruptCase> cases = {
      {"empty file", "", "shorter than the 8-byte"},
      {"3 bytes", "abc", "shorter than the 8-byte"},
      {"absurd header length", RawFile("{}", 0, 1ull << 40), "absurd"},
      {"header past EOF", RawFile("{}", 0, 100), "past the end of the file"},
      {"not json", RawFile("{not json}", 0), "not valid JSON"},
      {"invalid utf-8", RawFile("{\"\xff\xfe\":1}", 0), "not valid JSON"},
      {"trailing garbage", RawFile("{} x", 0), "not valid JSON"},
      {"not an object", RawFile("[1,2,3]", 0), "must be a JSON object"},
      {"entry not object", RawFile(R"({"w":[1]})", 0),
       "tensor 'w': header entry must be an object"},
      {"missing dtype", RawFile(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8),
       "tensor 'w': missing 'dtype'"},
      {"unknown dtype", RawFile(R"({"w":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8),
       "tensor 'w': unknown dtype 'F33'"},
      {"dtype not string", RawFile(R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
       "'dtype' must be a string"},
      {"missing shape", RawFile(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8),
       "missing 'shape'"},
      {"shape not array", RawFile(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
       "'shape' must be an array"},
      {"negative dim", RawFile(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8),
       "'shape' must hold non-negative integers"},
      {"float dim", RawFile(R"({"w":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8),
       "'shape' must hold non-negative integers"},
      {"string dim", RawFile(R"({"w":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", 8),
       "'shape' must hold non-negative integers"},
      {"missing offsets", RawFile(R"({"w":{"dtype":"F32","shape":[2]}})", 8),
       "missing 'data_offsets'"},
      {"one offset", RawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", 8),
       "'data_offsets' must be [begin, end]"},
      {"negative offset", RawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", 8),
       "'data_offsets' must be [begin, end]"},
      {"begin > end", RawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
       "has begin > end"},
      {"size mismatch", RawFile(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8),
       "tensor 'w': byte size mismatch: shape [3] of F32 needs 12 bytes"},
      {"shape overflow",
       RawFile(R"({"w":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8),
       "overflows"},
      {"end past data", RawFile("{" + ok_entry + "}", 4), "tensor 'w' ends at data byte 8"},
      {"overlap",
       RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
               12),
       "tensor 'b' (data bytes 4..12) overlaps tensor 'a'"},
      {"same range twice",
       RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
               8),
       "overlaps"},
      {"gap",
       RawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}})",
               24),
       "gap in the data section: tensor 'b' begins at data byte 16"},
      {"leading gap", RawFile(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16),
       "gap in the data section"},
      {"trailing bytes", RawFile("{" + ok_entry + "}", 12), "trailing bytes"},
      {"duplicate names", RawFile("{" + ok_entry + "," + ok_entry + "}", 8),
       "tensor 'w' appears twice"},
      {"metadata not object", RawFile(R"({"__metadata__":[1]})", 0),
       "__metadata__ must be an object"},
      {"metadata value not string", RawFile(R"({"__metadata__":{"step":3}})", 0),
       "__metadata__ value 'step' must be a string"},
  };
  TempDir dir;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.label);
    Status status = OpenError(dir, c.bytes);
    EXPECT_EQ(status.code(), StatusCode::kDataLoss) << status.ToString();
    EXPECT_NE(status.message().find(c.expected), std::string::npos)
        << "message: " << status.message() << "\nexpected to contain: " << c.expected;
    EXPECT_NE(status.message().find("bad.safetensors"), std::string::npos) << status.message();
  }
}

TEST(SafetensorsCorruptTest, AcceptsTheLenientPartsOfTheFormat) {
  // Tensors listed out of offset order, extra keys in an entry, a null
  // __metadata__ and header padding are all legal.
  TempDir dir;
  fs::path path = dir.path() / "lenient.safetensors";
  WriteBytes(path, RawFile(R"({"__metadata__":null,)"
                           R"("b":{"dtype":"U8","shape":[2],"data_offsets":[4,6],"extra":1},)"
                           R"("a":{"dtype":"I16","shape":[2],"data_offsets":[0,4]}}   )",
                           6));
  auto file = SafetensorsFile::Open(path.string());
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ASSERT_EQ((*file)->tensors().size(), 2u);
  EXPECT_EQ((*file)->tensors()[0].name, "a");  // offset order
  EXPECT_EQ((*file)->tensors()[1].name, "b");
}

TEST(SafetensorsCorruptTest, EveryTruncationOfAValidFileIsRejected) {
  TempDir dir;
  std::vector<float> a(10, 1.5f);
  std::vector<int64_t> b(3, -7);
  fs::path good = dir.path() / "good.safetensors";
  ASSERT_TRUE(WriteSafetensors(
                  good.string(),
                  {{"a", DType::kF32, {2, 5}, a.data(), 40}, {"b", DType::kI64, {3}, b.data(), 24}},
                  {{"format", "pt"}})
                  .ok());
  const std::string bytes = ReadBytes(good);
  for (size_t length = 0; length < bytes.size(); ++length) {
    Status status = OpenError(dir, bytes.substr(0, length));
    EXPECT_EQ(status.code(), StatusCode::kDataLoss) << "length " << length;
  }
  // The message for a file cut inside the data says so.
  Status cut = OpenError(dir, bytes.substr(0, bytes.size() - 3));
  EXPECT_NE(cut.message().find("truncated"), std::string::npos) << cut.message();
}

TEST(SafetensorsCorruptTest, RandomCorruptionNeverCrashes) {
  TempDir dir;
  std::vector<float> a(16, 0.25f);
  fs::path good = dir.path() / "good.safetensors";
  ASSERT_TRUE(WriteSafetensors(good.string(), {{"alpha", DType::kF32, {4, 4}, a.data(), 64},
                                               {"beta", DType::kF32, {2}, a.data(), 8}})
                  .ok());
  const std::string bytes = ReadBytes(good);
  std::mt19937 rng(1234);
  fs::path path = dir.path() / "fuzz.safetensors";
  int opened = 0;
  for (int round = 0; round < 2000; ++round) {
    std::string mutated = bytes;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      // Mostly the length and header, where parsing happens.
      size_t limit = (rng() % 4 == 0) ? mutated.size() : std::min<size_t>(mutated.size(), 120);
      mutated[rng() % limit] = static_cast<char>(rng());
    }
    WriteBytes(path, mutated);
    auto file = SafetensorsFile::Open(path.string());
    if (file.ok()) {
      ++opened;
      // Whatever opened must be self-consistent and readable end to end.
      for (const auto& entry : (*file)->tensors()) {
        ASSERT_EQ(entry.nbytes, static_cast<uint64_t>(entry.numel()) * DTypeSize(entry.dtype));
        std::vector<uint8_t> copy(entry.data, entry.data + entry.nbytes);
        ASSERT_EQ(copy.size(), entry.nbytes);
      }
    }
  }
  SUCCEED() << opened << " of 2000 mutated files still parsed";
}

}  // namespace
}  // namespace spar
