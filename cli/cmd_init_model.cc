// `spar init-model`: writes a Hugging Face model folder of a real
// architecture (Llama-3 or Gemma) with seeded random weights and a real
// tokenizer, so tests and the embedded default run without downloading
// weights; optionally with a preference-model head in the released GPM
// layout (backbone under model.*, value_head.weight, prompt_head.weight).
//   spar init-model --arch llama --preset tiny --tokenizer DIR --out DIR [--seed N]
//   spar init-model --config config.json --tokenizer DIR --out DIR
//   spar init-model --arch gemma --preset tiny --head gpm --k 2 --prompt-head ...
#include <ATen/CPUGeneratorImpl.h>

#include <iostream>

#include "cli/command.h"
#include "model/causal_lm.h"
#include "model/checkpoint.h"

namespace spar::cli {
namespace {

struct InitArgs {
  std::string arch = "llama";
  std::string preset = "tiny";
  std::string config;
  std::string tokenizer;
  std::string out;
  uint64_t seed = 1;
  std::string dtype;
  std::string head;
  int64_t k = 2;
  bool prompt_head = false;
  double max_shard_mb = 0;
};

int RunInit(const InitArgs& args) {
  Result<ModelConfig> config =
      args.config.empty() ? ModelConfig::Preset(args.arch, args.preset) : ModelConfig::FromFile(args.config);
  if (!config.ok()) return Fail("init-model", config.status());
  if (!args.head.empty() && args.head != "gpm" && args.head != "bt")
    return Fail("init-model", InvalidArgument("--head must be gpm or bt (got '" + args.head + "')"));
  if (args.head == "gpm" && args.k < 1) return Fail("init-model", InvalidArgument("--k must be >= 1"));
  CheckpointWriteOptions options;
  if (!args.dtype.empty()) {
    auto dtype = DTypeFromName(args.dtype);
    if (!dtype.ok()) return Fail("init-model", dtype.status());
    options.dtype = *dtype;
    config->torch_dtype = args.dtype == "bf16" ? "bfloat16" : args.dtype == "fp16" ? "float16" : args.dtype;
  }
  if (args.max_shard_mb > 0) options.max_shard_bytes = static_cast<uint64_t>(args.max_shard_mb * 1048576.0);
  CausalLMOptions model_options;
  model_options.with_lm_head = args.head.empty();
  auto model = CreateCausalLM(*config, args.seed, model_options);
  if (!model.ok()) return Fail("init-model", model.status());
  auto weights = (*model)->NamedWeights();
  if (!args.head.empty()) {
    // Heads drawn like HF's Linear init (normal, std 0.02) from the next seed.
    auto generator = at::detail::createCPUGenerator(args.seed + 1);
    const int64_t rows = args.head == "gpm" ? 2 * args.k : 1;
    auto value_head = torch::empty({rows, config->hidden_size});
    value_head.normal_(0.0, 0.02, generator);
    weights.emplace_back("value_head.weight", value_head);
    if (args.head == "gpm" && args.prompt_head) {
      auto prompt_head = torch::empty({args.k, config->hidden_size});
      prompt_head.normal_(0.0, 0.02, generator);
      weights.emplace_back("prompt_head.weight", prompt_head);
    }
  }
  Status s = WriteHfFolder(args.out, *config, weights, args.tokenizer, options);
  if (!s.ok()) return Fail("init-model", s);
  int64_t params = 0;
  for (auto& [name, t] : weights) params += t.numel();
  std::cout << "wrote " << args.out << ": " << config->architecture << " "
            << (args.config.empty() ? args.preset : args.config) << ", " << params << " parameters"
            << (args.head.empty() ? "" : ", " + args.head + " head") << ", seed " << args.seed << "\n";
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<InitArgs>();
  sub.add_option("--arch", args->arch, "llama | gemma")->check(CLI::IsMember({"llama", "gemma"}));
  sub.add_option("--preset", args->preset, "tiny | tiny-tied | small | llama3-8b | llama3.1-8b | gemma-2b");
  sub.add_option("--config", args->config, "a config.json to use instead of a preset");
  sub.add_option("--tokenizer", args->tokenizer,
                 "folder with tokenizer.json + tokenizer_config.json to copy in (e.g. .cache/tokenizers/llama3)");
  sub.add_option("--out", args->out, "output folder (replaced atomically)")->required();
  sub.add_option("--seed", args->seed, "weight seed");
  sub.add_option("--dtype", args->dtype, "float32 | bfloat16 | float16 (default: the config's)");
  sub.add_option("--head", args->head, "add a preference head: gpm (value_head 2k x H) | bt (1 x H)");
  sub.add_option("--k", args->k, "GPM: k (value_head has 2k rows)");
  sub.add_flag("--prompt-head", args->prompt_head, "GPM: add prompt_head (k x H) for the eigenvalue gates");
  sub.add_option("--max-shard-mb", args->max_shard_mb, "shard the safetensors at this size");
  sub.callback([args]() { Exit(RunInit(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("init-model", "Write an HF model folder with seeded weights (policy or GPM/BT scorer)", 50,
                      Setup);

}  // namespace spar::cli
