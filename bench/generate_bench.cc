// `spar bench generate`: prefill and decode tokens/s of the LibTorch decoder
// with its KV cache, at batch 1 and a large batch, plus the whole engine
// (sampling included). Random weights of a preset shape; on a GPU, e.g.
//   spar bench generate --preset llama3-8b --device cuda --dtype bfloat16
// it also prints the weight bytes streamed per decode step against the
// time, i.e. the achieved memory bandwidth (the bound for batch-1 decode).
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "model/engine.h"

namespace spar::bench {
namespace {

struct GenerateBenchArgs {
  std::string arch = "llama";
  std::string preset = "tiny";
  std::string device = "cpu";
  std::string dtype = "float32";
  int64_t prompt = 128;
  int64_t batch = 32;
  int64_t steps = 32;
  std::string tokenizer;
};

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

void Sync(const torch::Device& device) {
  if (device.is_cuda()) torch::zeros({1}, torch::TensorOptions().device(device)).cpu();  // waits for the stream
}

int Run(const GenerateBenchArgs& args) {
  auto config = ModelConfig::Preset(args.arch, args.preset);
  if (!config.ok()) return cli::Fail("bench generate", config.status());
  auto dtype = DTypeFromName(args.dtype);
  if (!dtype.ok()) return cli::Fail("bench generate", dtype.status());
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(args.device);
  } catch (const c10::Error&) {
    return cli::Fail("bench generate", InvalidArgument("--device '" + args.device + "' is not a device"));
  }
  CausalLMOptions options;
  options.parameters = torch::TensorOptions().dtype(*dtype).device(device);
  CausalLM model(*config, options);  // uninitialised weights: speed does not depend on values
  {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.normal_(0, 0.02);
  }
  model->eval();
  torch::NoGradGuard no_grad;
  const int64_t capacity = args.prompt + args.steps + 1;
  auto cache = KvCache::Allocate(*config, args.batch, capacity, *dtype, device);
  int64_t weight_bytes = 0;
  for (auto& p : model->parameters()) weight_bytes += p.nbytes();
  std::printf("model %s/%s: %.1fM parameters, %.2f GB weights (%s on %s), KV cache %.1f MB\n", args.arch.c_str(),
              args.preset.c_str(), config->NumParameters() / 1e6, weight_bytes / 1e9, args.dtype.c_str(),
              args.device.c_str(), cache.nbytes() / 1e6);
  nlohmann::json result = {{"bench", "generate"}, {"preset", args.preset}, {"device", args.device},
                           {"dtype", args.dtype}};

  auto prompt = torch::randint(0, config->vocab_size, {args.prompt}, torch::TensorOptions().dtype(torch::kLong));
  // Warm-up, then prefill every slot.
  model->Prefill(prompt.to(device), cache, 0);
  Sync(device);
  auto t = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < args.batch; ++s) model->Prefill(prompt.to(device), cache, s);
  Sync(device);
  const double prefill = args.prompt * args.batch / Since(t);
  std::printf("prefill  %6ld-token prompts: %10.0f tokens/s\n", static_cast<long>(args.prompt), prefill);
  result["prefill_tokens_per_second"] = prefill;

  for (int64_t b : {int64_t{1}, args.batch}) {
    auto tokens = torch::randint(0, config->vocab_size, {b}, torch::TensorOptions().dtype(torch::kLong));
    auto slots = torch::arange(b, torch::kLong);
    auto positions = torch::full({b}, args.prompt, torch::kLong);
    model->Decode(tokens, positions, slots, cache);  // warm-up
    Sync(device);
    t = std::chrono::steady_clock::now();
    for (int64_t s = 0; s < args.steps; ++s) {
      positions.fill_(args.prompt + s);
      model->Decode(tokens, positions, slots, cache);
    }
    Sync(device);
    const double step = Since(t) / args.steps;
    std::printf("decode   batch %4ld: %10.1f tokens/s  (%.2f ms/step, weights streamed at %.1f GB/s)\n",
                static_cast<long>(b), b / step, step * 1e3, weight_bytes / step / 1e9);
    result["decode_batch_" + std::to_string(b) + "_tokens_per_second"] = b / step;
    result["decode_batch_" + std::to_string(b) + "_ms_per_step"] = step * 1e3;
  }

  // The engine end to end (sampling with top-p, seeds, stops), when a
  // tokenizer is given.
  if (!args.tokenizer.empty()) {
    auto tok = Tokenizer::FromDir(args.tokenizer);
    if (!tok.ok()) return cli::Fail("bench generate", tok.status());
    EngineOptions engine_options;
    engine_options.max_batch = static_cast<int32_t>(args.batch);
    engine_options.max_context = static_cast<int32_t>(capacity + 1);
    auto engine = GenerationEngine::Create(model, std::shared_ptr<const Tokenizer>(std::move(*tok)), engine_options);
    if (!engine.ok()) return cli::Fail("bench generate", engine.status());
    SamplingOptions sampling;
    sampling.temperature = 0.7f;
    sampling.top_p = 0.9f;
    sampling.max_new_tokens = static_cast<int32_t>(args.steps);
    sampling.ignore_eos = true;
    std::vector<int32_t> ids(args.prompt);
    for (int64_t i = 0; i < args.prompt; ++i) ids[i] = static_cast<int32_t>(prompt[i].item<int64_t>());
    t = std::chrono::steady_clock::now();
    auto out = (*engine)->Generate(ids, static_cast<uint32_t>(args.batch), sampling);
    if (!out.ok()) return cli::Fail("bench generate", out.status());
    const double seconds = Since(t);
    const double rate = static_cast<double>(args.batch * args.steps) / seconds;
    std::printf("engine   batch %4ld, top-p 0.9: %10.1f tokens/s (prefill + sampling included)\n",
                static_cast<long>(args.batch), rate);
    result["engine_tokens_per_second"] = rate;
  }
  std::printf("RESULT %s\n", result.dump().c_str());
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<GenerateBenchArgs>();
  sub.add_option("--arch", args->arch, "llama | gemma");
  sub.add_option("--preset", args->preset, "tiny | small | llama3-8b | gemma-2b ...");
  sub.add_option("--device", args->device, "cpu | cuda | cuda:N");
  sub.add_option("--dtype", args->dtype, "float32 | bfloat16 | float16");
  sub.add_option("--prompt", args->prompt, "prompt tokens");
  sub.add_option("--batch", args->batch, "large-batch size (sequences)");
  sub.add_option("--steps", args->steps, "decode steps timed");
  sub.add_option("--tokenizer", args->tokenizer, "also time the whole engine (needs the tokenizer folder)");
  sub.callback([args]() { cli::Exit(Run(*args)); });
}

}  // namespace

SPAR_REGISTER_BENCH("generate", "Decoder prefill/decode tokens/s with the KV cache, and the engine", Setup);

}  // namespace spar::bench
