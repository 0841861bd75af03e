// `spar bench tokenizer`: encode and decode throughput of the Llama-3 and
// Gemma tokenizers on generated English-like text, one thread.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "tokenizer/tokenizer.h"

namespace spar::bench {
namespace {

struct TokenizerBenchOptions {
  std::string cache_dir;  // holds llama3/ and gemma/
  std::vector<std::string> families = {"llama3", "gemma"};
  int64_t megabytes = 8;
  int64_t repeats = 3;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// Sentences drawn from a fixed set of varied English (with numbers, code and
// punctuation), so the word cache sees a realistic mix of hits and misses.
std::string MakeCorpus(size_t bytes) {
  static const char* kSentences[] = {
      "The committee met on Tuesday to review the proposal, which had been revised three times.",
      "Self-play preference optimization iterates: sample K responses, score them, update the "
      "policy.",
      "In 2023, the company reported revenue of $4.2 billion, up 17% from the previous year.",
      "She didn't think it would rain, but she'd packed an umbrella anyway.",
      "for (int i = 0; i < n; ++i) { total += weights[i] * values[i]; }",
      "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
      "\"Are you sure?\" he asked. \"Absolutely,\" she replied, without looking up.",
      "The mitochondria is often called the powerhouse of the cell; it produces ATP.",
      "Please send the report to alice@example.com before 5:30 p.m. on Friday.",
      "Neural networks learn representations by minimizing a loss over many examples.",
      "The river winds through the valley, past orchards, vineyards and small stone villages.",
      "Version 1.12.3 fixes a crash when the configuration file is missing a required key.",
  };
  std::mt19937 rng(7);
  std::string out;
  out.reserve(bytes + 256);
  size_t sentence = 0;
  while (out.size() < bytes) {
    out += kSentences[rng() % (sizeof(kSentences) / sizeof(kSentences[0]))];
    out += (++sentence % 6 == 0) ? "\n\n" : " ";
    if (sentence % 17 == 0) out += "Item " + std::to_string(rng() % 100000) + ": ";
  }
  return out;
}

int Run(const TokenizerBenchOptions& o) {
  namespace fs = std::filesystem;
  std::string cache = o.cache_dir;
  if (cache.empty()) {
    const char* env = std::getenv("SPAR_TOKENIZER_CACHE");
    cache = env != nullptr ? env : ".cache/tokenizers";
  }
  const std::string corpus = MakeCorpus(static_cast<size_t>(o.megabytes) << 20);
  const double mb = static_cast<double>(corpus.size()) / (1 << 20);
  std::printf("spar bench tokenizer: %.1f MB of English-like text, best of %lld runs, 1 thread\n",
              mb, static_cast<long long>(o.repeats));
  nlohmann::json result = {{"bench", "tokenizer"}, {"megabytes", mb}};
  int ran = 0;
  for (const std::string& family : o.families) {
    const std::string dir = (fs::path(cache) / family).string();
    auto t0 = std::chrono::steady_clock::now();
    auto tok = Tokenizer::FromDir(dir);
    if (!tok.ok()) {
      std::printf("  %s: skipped (%s)\n", family.c_str(), tok.status().ToString().c_str());
      continue;
    }
    const double load_s = Seconds(t0);
    std::vector<int32_t> ids;
    double cold_s = 0;
    double encode_s = 1e30;
    for (int64_t r = 0; r <= o.repeats; ++r) {
      t0 = std::chrono::steady_clock::now();
      ids = (*tok)->Encode(corpus);
      const double s = Seconds(t0);
      if (r == 0) {
        cold_s = s;  // fills the word cache
      } else {
        encode_s = std::min(encode_s, s);
      }
    }
    double decode_s = 1e30;
    size_t decoded_bytes = 0;
    for (int64_t r = 0; r < o.repeats; ++r) {
      t0 = std::chrono::steady_clock::now();
      decoded_bytes = (*tok)->Decode(ids).size();
      decode_s = std::min(decode_s, Seconds(t0));
    }
    const bool round_trip = decoded_bytes == corpus.size();
    std::printf(
        "  %-6s load %.2f s | encode %.1f MB/s (cold %.1f MB/s), %.2f M tokens/s, "
        "%.2f bytes/token | decode %.1f MB/s%s\n",
        family.c_str(), load_s, mb / encode_s, mb / cold_s,
        static_cast<double>(ids.size()) / encode_s / 1e6,
        static_cast<double>(corpus.size()) / static_cast<double>(ids.size()), mb / decode_s,
        round_trip ? "" : " (round trip FAILED)");
    result[family] = {{"load_s", load_s},
                      {"encode_mb_per_s", mb / encode_s},
                      {"encode_cold_mb_per_s", mb / cold_s},
                      {"decode_mb_per_s", mb / decode_s},
                      {"tokens", ids.size()},
                      {"round_trip", round_trip}};
    ++ran;
  }
  std::printf("RESULT %s\n", result.dump().c_str());
  if (ran == 0) {
    std::fprintf(stderr,
                 "spar bench tokenizer: no tokenizer found under %s "
                 "(run scripts/setup.sh or pass --cache)\n",
                 cache.c_str());
    return 1;
  }
  return 0;
}

void Setup(CLI::App& sub) {
  auto o = std::make_shared<TokenizerBenchOptions>();
  sub.add_option("--cache", o->cache_dir,
                 "folder with llama3/ and gemma/ tokenizer folders "
                 "(default: $SPAR_TOKENIZER_CACHE or .cache/tokenizers)");
  sub.add_option("--family", o->families, "families to run")->capture_default_str();
  sub.add_option("--mb", o->megabytes, "corpus size in MB")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  sub.add_option("--repeats", o->repeats, "timed runs (best is reported)")
      ->capture_default_str()
      ->check(CLI::Range(1, 100));
  sub.callback([o]() { cli::Exit(Run(*o)); });
}

}  // namespace

SPAR_REGISTER_BENCH("tokenizer", "Tokenizer encode/decode MB/s (Llama-3, Gemma)", Setup);

}  // namespace spar::bench
