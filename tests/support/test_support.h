// Small helpers shared by every spar test suite.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace spar::testing {

// A fresh directory under the system temp folder, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// The project's source folder (for tests/data and the like).
std::filesystem::path SourceDir();

// Folder of a real tokenizer fetched by scripts/setup.sh: "llama3" or
// "gemma" -> <source>/.cache/tokenizers/<name> (or $SPAR_TOKENIZER_CACHE/<name>).
// Returns an empty path when the files are absent; callers GTEST_SKIP then.
std::filesystem::path TokenizerDir(const std::string& name);

// True when Debian's /usr/bin/python3 can import torch (the independent
// numerical references in tests/model/reference need it); checked once.
bool PythonHasTorch();

// Path of the built `spar` binary.
std::string SparBinary();

// Runs argv (argv[0] is the program) to completion and captures its stdout
// and stderr together. Returns the exit code (or 128+signal).
int RunProcess(const std::vector<std::string>& argv, std::string* output);

// Writes text to a file, creating parent folders.
void WriteFile(const std::filesystem::path& path, const std::string& text);
std::string ReadFile(const std::filesystem::path& path);

}  // namespace spar::testing
