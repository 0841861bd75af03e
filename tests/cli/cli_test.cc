// The `spar` binary as users meet it: help, exit codes, clear errors.
#include <filesystem>
#include <sstream>

#include <gtest/gtest.h>

#include "tests/support/test_support.h"

namespace spar {
namespace {

using testing::RunProcess;
using testing::SparBinary;

TEST(CliTest, HelpListsTheSubcommands) {
  std::string out;
  ASSERT_EQ(RunProcess({SparBinary(), "--help"}, &out), 0) << out;
  for (const char* sub : {"export", "config", "bench"})
    EXPECT_NE(out.find(sub), std::string::npos) << sub << " missing from:\n" << out;
}

TEST(CliTest, EverySubcommandHasHelp) {
  std::string out;
  ASSERT_EQ(RunProcess({SparBinary(), "--help"}, &out), 0);
  // Pull the names listed under "Subcommands:".
  auto pos = out.find("Subcommands:");
  ASSERT_NE(pos, std::string::npos);
  std::istringstream lines(out.substr(pos));
  std::string line;
  std::getline(lines, line);
  int checked = 0;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string name;
    if (!(words >> name)) continue;
    std::string help;
    EXPECT_EQ(RunProcess({SparBinary(), name, "--help"}, &help), 0) << name << ":\n" << help;
    EXPECT_NE(help.find("Usage"), std::string::npos) << name;
    ++checked;
  }
  EXPECT_GE(checked, 3);
}

TEST(CliTest, UnknownSubcommandAndMissingFlagsFail) {
  std::string out;
  EXPECT_NE(RunProcess({SparBinary(), "frobnicate"}, &out), 0);
  EXPECT_NE(RunProcess({SparBinary(), "export"}, &out), 0);
  EXPECT_NE(out.find("--db"), std::string::npos) << out;
  EXPECT_NE(RunProcess({SparBinary(), "--log-level", "loud", "config", "check", "--config", "x"}, &out), 0);
  EXPECT_NE(out.find("loud"), std::string::npos) << out;
}

TEST(CliTest, ConfigCheckReportsTheBadKey) {
  testing::TempDir dir;
  auto bad = dir.path() / "bad.yaml";
  testing::WriteFile(bad, "prompts: {path: p}\npolicy: {model: m}\ngeneration: {top_p: 2}\n");
  std::string out;
  EXPECT_EQ(RunProcess({SparBinary(), "config", "check", "--config", bad.string()}, &out), 2);
  EXPECT_NE(out.find("generation.top_p"), std::string::npos) << out;
  auto good = (testing::SourceDir() / "examples" / "local.yaml").string();
  EXPECT_EQ(RunProcess({SparBinary(), "config", "check", "--config", good}, &out), 0) << out;
}

TEST(CliTest, ExportOfAMissingStoreIsAClearError) {
  testing::TempDir dir;
  std::string out;
  EXPECT_EQ(RunProcess({SparBinary(), "export", "--db", (dir.path() / "nope").string(), "--out",
                        (dir.path() / "x.jsonl").string()},
                       &out),
            1);
  EXPECT_NE(out.find("nope"), std::string::npos) << out;
  EXPECT_FALSE(std::filesystem::exists(dir.path() / "x.jsonl"));
}

}  // namespace
}  // namespace spar
