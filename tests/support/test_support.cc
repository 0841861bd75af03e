#include "tests/support/test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace spar::testing {

namespace fs = std::filesystem;

TempDir::TempDir() {
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path candidate = fs::temp_directory_path() /
                         ("spar-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::error_code ec;
    if (fs::create_directory(candidate, ec)) {
      path_ = candidate;
      return;
    }
  }
  throw std::runtime_error("cannot create a temporary directory");
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

fs::path SourceDir() { return fs::path(SPAR_SOURCE_DIR); }

fs::path TokenizerDir(const std::string& name) {
  fs::path base = SourceDir() / ".cache" / "tokenizers";
  if (const char* env = std::getenv("SPAR_TOKENIZER_CACHE")) base = env;
  fs::path dir = base / name;
  if (fs::exists(dir / "tokenizer.json")) return dir;
  return {};
}

std::string SparBinary() { return SPAR_BINARY; }

int RunProcess(const std::vector<std::string>& argv, std::string* output) {
  std::string command;
  for (const auto& arg : argv) {
    std::string quoted = "'";
    for (char c : arg) {
      if (c == '\'') quoted += "'\\''";
      else quoted += c;
    }
    quoted += "'";
    command += quoted + " ";
  }
  command += "2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return -1;
  std::array<char, 4096> buffer;
  std::string out;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) out.append(buffer.data(), n);
  int status = ::pclose(pipe);
  if (output) *output = out;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

void WriteFile(const fs::path& path, const std::string& text) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool PythonHasTorch() {
  static const bool has = [] {
    if (!std::filesystem::exists("/usr/bin/python3")) return false;
    std::string output;
    return RunProcess({"/usr/bin/python3", "-c", "import torch"}, &output) == 0;
  }();
  return has;
}

}  // namespace spar::testing
