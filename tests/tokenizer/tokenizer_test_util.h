// Shared helpers of the tokenizer tests: the real tokenizers, loaded once.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/support/test_support.h"
#include "tokenizer/tokenizer.h"

namespace spar::testing {

// The tokenizer fetched by scripts/setup.sh ("llama3" | "gemma"), or nullptr
// when it is absent. Loaded once per process.
inline const Tokenizer* RealTokenizer(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> loaded;
  auto it = loaded.find(name);
  if (it != loaded.end()) return it->second.get();
  std::unique_ptr<Tokenizer> tok;
  const auto dir = TokenizerDir(name);
  if (!dir.empty()) {
    auto r = Tokenizer::FromDir(dir.string());
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (r.ok()) tok = std::move(r).value();
  }
  return loaded.emplace(name, std::move(tok)).first->second.get();
}

inline nlohmann::json LoadTestJson(const std::string& name) {
  return nlohmann::json::parse(ReadFile(SourceDir() / "tests" / "data" / "tokenizer" / name));
}

inline std::vector<int32_t> Ids(const nlohmann::json& j) { return j.get<std::vector<int32_t>>(); }

}  // namespace spar::testing

#define SPAR_REQUIRE_TOKENIZER(var, name)                                            \
  const ::spar::Tokenizer* var = ::spar::testing::RealTokenizer(name);               \
  if (var == nullptr) {                                                              \
    GTEST_SKIP() << "tokenizer '" << name << "' not found under .cache/tokenizers; " \
                 << "run scripts/setup.sh";                                          \
  }
