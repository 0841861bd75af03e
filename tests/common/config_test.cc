#include "common/config.h"

#include <gtest/gtest.h>

#include "common/status.h"

namespace spar {
namespace {

struct Sample {
  std::string name = "default";
  int64_t count = 3;
  double ratio = 0.5;
  bool flag = false;
  std::string mode = "fast";
  std::vector<std::string> tags;
  int64_t child_size = 1;
};

Status Read(ConfigNode root, Sample* out) {
  root.Get("name", &out->name);
  root.Get("count", &out->count, 1, 10);
  root.Get("ratio", &out->ratio, 0.0, 1.0, true);
  root.Get("flag", &out->flag);
  root.GetEnum("mode", &out->mode, {"fast", "slow"});
  root.Get("tags", &out->tags);
  ConfigNode child = root.Child("child");
  child.Get("size", &out->child_size, 0);
  SPAR_RETURN_IF_ERROR(child.Finish());
  return root.Finish();
}

Status ParseSample(const std::string& yaml, Sample* out) {
  auto root = ConfigNode::LoadString(yaml, "test.yaml");
  if (!root.ok()) return root.status();
  return Read(std::move(*root), out);
}

TEST(ConfigTest, GoodFileLoadsAndDefaultsStay) {
  Sample s;
  ASSERT_TRUE(ParseSample("name: x\ncount: 7\ntags: [a, b]\nchild: {size: 4}\n", &s).ok());
  EXPECT_EQ(s.name, "x");
  EXPECT_EQ(s.count, 7);
  EXPECT_EQ(s.tags, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(s.child_size, 4);
  EXPECT_DOUBLE_EQ(s.ratio, 0.5);
  EXPECT_EQ(s.mode, "fast");
  Sample empty;
  EXPECT_TRUE(ParseSample("", &empty).ok());
}

void ExpectError(const std::string& yaml, const std::vector<std::string>& fragments) {
  Sample s;
  Status st = ParseSample(yaml, &s);
  ASSERT_FALSE(st.ok()) << yaml;
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  for (const auto& f : fragments)
    EXPECT_NE(st.message().find(f), std::string::npos) << "'" << f << "' not in: " << st.message();
}

TEST(ConfigTest, EachKindOfBadFileHasAClearMessage) {
  ExpectError("cuont: 3\n", {"test.yaml", "cuont", "unknown key", "count"});
  ExpectError("child: {sise: 3}\n", {"child.sise", "unknown key", "size"});
  ExpectError("count: 11\n", {"count", "[1, 10]", "11"});
  ExpectError("count: many\n", {"count", "an integer", "many"});
  ExpectError("ratio: 0\n", {"ratio", "(0, 1]"});
  ExpectError("flag: maybe\n", {"flag", "true or false"});
  ExpectError("mode: medium\n", {"mode", "medium", "fast, slow"});
  ExpectError("tags: a\n", {"tags", "list"});
  ExpectError("child: 3\n", {"child", "mapping"});
  ExpectError("name: [1\n", {"test.yaml", "not valid YAML", "line"});
  ExpectError("- a\n- b\n", {"top level", "mapping"});
}

TEST(ConfigTest, MissingFileIsNotFound) {
  auto root = ConfigNode::LoadFile("/nonexistent/spar.yaml");
  ASSERT_FALSE(root.ok());
  EXPECT_EQ(root.status().code(), StatusCode::kNotFound);
  EXPECT_NE(root.status().message().find("/nonexistent/spar.yaml"), std::string::npos);
}

TEST(StatusTest, ResultAndMacros) {
  auto f = [](bool fail) -> Result<int> {
    if (fail) return InvalidArgument("bad");
    return 5;
  };
  auto g = [&](bool fail) -> Status {
    SPAR_ASSIGN_OR_RETURN(int v, f(fail));
    return v == 5 ? Status::Ok() : Internal("wrong");
  };
  EXPECT_TRUE(g(false).ok());
  EXPECT_EQ(g(true).ToString(), "invalid_argument: bad");
  EXPECT_EQ(NotFound("x").WithContext("ctx").message(), "ctx: x");
}

}  // namespace
}  // namespace spar
