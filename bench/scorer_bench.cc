// `spar bench scorer`: groups/s and responses/s of the GPM scorer at K
// responses per group on a tiny Gemma backbone (the GPM-Gemma-2B
// architecture, seeded weights, the real Gemma tokenizer), against a
// pairwise scorer on the same backbone that needs one pass per ordered pair
// (K(K-1) passes per group instead of K).
#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <cstdio>
#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "services/scorer/model_scorer.h"

namespace spar::bench {
namespace {

struct ScorerBenchArgs {
  std::string arch = "gemma";
  std::string preset = "tiny";
  std::string tokenizer = ".cache/tokenizers/gemma";
  int64_t groups = 16;
  int64_t k = 5;
  int64_t words = 24;  // per response
};

int Run(const ScorerBenchArgs& args) {
  auto config = ModelConfig::Preset(args.arch, args.preset);
  if (!config.ok()) return cli::Fail("bench scorer", config.status());
  const auto dir = std::filesystem::temp_directory_path() / ("spar-bench-scorer-" + std::to_string(getpid()));
  CausalLMOptions options;
  options.with_lm_head = false;
  auto model = CreateCausalLM(*config, 3, options);
  if (!model.ok()) return cli::Fail("bench scorer", model.status());
  auto weights = (*model)->NamedWeights();
  auto generator = at::detail::createCPUGenerator(4);
  auto value = torch::empty({8, config->hidden_size});
  value.normal_(0, 0.02, generator);
  auto prompt_head = torch::empty({4, config->hidden_size});
  prompt_head.normal_(0, 0.02, generator);
  weights.emplace_back("value_head.weight", value);
  weights.emplace_back("prompt_head.weight", prompt_head);
  Status written = WriteHfFolder(dir.string(), *config, weights, args.tokenizer);
  if (!written.ok()) return cli::Fail("bench scorer", written);

  ModelScorerOptions scorer_options;
  scorer_options.model_dir = dir.string();
  auto scorer = ModelScorer::Load(scorer_options);
  if (!scorer.ok()) return cli::Fail("bench scorer", scorer.status());

  const char* vocabulary[] = {"the", "answer", "is", "a", "short", "list", "of", "reasons", "because",
                              "first", "second", "finally", "we", "can", "see", "that", "it", "works"};
  auto response = [&](int64_t g, int64_t i) {
    std::string text;
    for (int64_t w = 0; w < args.words; ++w) text += std::string(vocabulary[(g * 7 + i * 3 + w * 5) % 18]) + " ";
    return text;
  };
  std::vector<ScoreGroupInput> groups, pairwise;
  for (int64_t g = 0; g < args.groups; ++g) {
    ScoreGroupInput group;
    group.group_id = std::to_string(g);
    group.prompt_text = "Question " + std::to_string(g) + ": explain why the sky is blue in a few words.";
    for (int64_t i = 0; i < args.k; ++i) group.responses.push_back(response(g, i));
    // A pairwise judge reads both responses in one pass, for every ordered pair.
    ScoreGroupInput pairs = group;
    pairs.responses.clear();
    for (int64_t i = 0; i < args.k; ++i)
      for (int64_t j = 0; j < args.k; ++j)
        if (i != j) pairs.responses.push_back("A: " + response(g, i) + "\nB: " + response(g, j));
    groups.push_back(std::move(group));
    pairwise.push_back(std::move(pairs));
  }
  auto time = [&](const std::vector<ScoreGroupInput>& input) -> Result<double> {
    SPAR_RETURN_IF_ERROR((*scorer)->Score({input[0]}).status());  // warm-up
    const auto t = std::chrono::steady_clock::now();
    SPAR_RETURN_IF_ERROR((*scorer)->Score(input).status());
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  auto gpm_seconds = time(groups);
  if (!gpm_seconds.ok()) return cli::Fail("bench scorer", gpm_seconds.status());
  auto pair_seconds = time(pairwise);
  if (!pair_seconds.ok()) return cli::Fail("bench scorer", pair_seconds.status());
  std::filesystem::remove_all(dir);

  const double g = static_cast<double>(args.groups);
  std::printf("GPM (%s/%s, K=%ld): %8.2f groups/s, %8.1f responses/s (K passes per group)\n", args.arch.c_str(),
              args.preset.c_str(), static_cast<long>(args.k), g / *gpm_seconds, g * args.k / *gpm_seconds);
  std::printf("pairwise, same backbone: %8.2f groups/s (K(K-1) = %ld passes per group)\n", g / *pair_seconds,
              static_cast<long>(args.k * (args.k - 1)));
  std::printf("GPM speed-up: %.2fx\n", *pair_seconds / *gpm_seconds);
  nlohmann::json result = {{"bench", "scorer"},
                           {"k", args.k},
                           {"gpm_groups_per_second", g / *gpm_seconds},
                           {"gpm_responses_per_second", g * args.k / *gpm_seconds},
                           {"pairwise_groups_per_second", g / *pair_seconds},
                           {"speedup", *pair_seconds / *gpm_seconds}};
  std::printf("RESULT %s\n", result.dump().c_str());
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<ScorerBenchArgs>();
  sub.add_option("--arch", args->arch, "backbone: gemma | llama");
  sub.add_option("--preset", args->preset, "backbone shape");
  sub.add_option("--tokenizer", args->tokenizer, "tokenizer folder matching --arch");
  sub.add_option("--groups", args->groups, "prompt groups");
  sub.add_option("-k", args->k, "responses per group");
  sub.add_option("--words", args->words, "words per response");
  sub.callback([args]() { cli::Exit(Run(*args)); });
}

}  // namespace

SPAR_REGISTER_BENCH("scorer", "GPM groups/s and responses/s at K, against a pairwise scorer", Setup);

}  // namespace spar::bench
