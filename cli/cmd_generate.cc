// `spar generate`: samples from an HF model folder with the same engine the
// generator service runs, and prints the throughput.
//   spar generate --model DIR --prompt "Hi" [-n K] [--temperature 0.7 --top-p 0.9 ...]
//   spar generate --model DIR --input prompts.jsonl --out rollouts.jsonl
// Prompts are chat messages rendered with the model's chat template unless
// --raw; input lines are {"prompt": text} or {"messages": [...]}.
#include <chrono>
#include <fstream>
#include <iostream>
#include <mutex>

#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "common/logging.h"
#include "model/engine.h"

namespace spar::cli {
namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt;
  std::string input;
  std::string out;
  bool raw = false;
  uint32_t n = 1;
  SamplingOptions sampling;
  int32_t max_batch = 16;
  int32_t max_context = 2048;
  std::string device = "cpu";
  std::string dtype;
  bool logprobs = false;
};

Result<std::vector<std::vector<ChatMessage>>> ReadPrompts(const GenerateArgs& args) {
  std::vector<std::vector<ChatMessage>> prompts;
  if (!args.prompt.empty()) prompts.push_back({{"user", args.prompt}});
  if (args.input.empty()) {
    if (prompts.empty()) return InvalidArgument("give --prompt or --input");
    return prompts;
  }
  std::ifstream in(args.input);
  if (!in) return NotFound("cannot read --input '" + args.input + "'");
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto bad = [&](const std::string& what) { return InvalidArgument(args.input + ":" + std::to_string(n) + ": " + what); };
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    if (j.contains("prompt") && j["prompt"].is_string()) {
      prompts.push_back({{"user", j["prompt"].get<std::string>()}});
    } else if (j.contains("messages") && j["messages"].is_array()) {
      std::vector<ChatMessage> messages;
      for (const auto& m : j["messages"]) {
        if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() ||
            !m["content"].is_string())
          return bad("messages must be objects with string role and content");
        messages.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
      }
      prompts.push_back(std::move(messages));
    } else {
      return bad("needs \"prompt\" (a string) or \"messages\" (a list)");
    }
  }
  return prompts;
}

int RunGenerate(const GenerateArgs& args) {
  auto prompts = ReadPrompts(args);
  if (!prompts.ok()) return Fail("generate", prompts.status());
  auto tokenizer = Tokenizer::FromDir(args.model);
  if (!tokenizer.ok()) return Fail("generate", tokenizer.status());
  std::shared_ptr<const Tokenizer> tok(std::move(*tokenizer));
  LoadOptions load;
  try {
    load.device = torch::Device(args.device);
  } catch (const c10::Error&) {
    return Fail("generate", InvalidArgument("--device '" + args.device + "' is not a device"));
  }
  if (!args.dtype.empty()) {
    auto dtype = DTypeFromName(args.dtype);
    if (!dtype.ok()) return Fail("generate", dtype.status());
    load.dtype = *dtype;
  }
  auto model = LoadCausalLM(args.model, load);
  if (!model.ok()) return Fail("generate", model.status());
  EngineOptions options;
  options.max_batch = args.max_batch;
  options.max_context = args.max_context;
  options.max_queue = std::max<int32_t>(4096, static_cast<int32_t>(prompts->size() * args.n));
  auto engine = GenerationEngine::Create(*model, tok, options);
  if (!engine.ok()) return Fail("generate", engine.status());

  std::vector<std::vector<int32_t>> encoded;
  for (size_t i = 0; i < prompts->size(); ++i) {
    const auto& messages = (*prompts)[i];
    if (args.raw) {
      encoded.push_back(tok->Encode(messages.back().content, tok->bos_id() >= 0));
    } else {
      auto ids = tok->EncodeChat(messages, /*add_generation_prompt=*/true);
      if (!ids.ok()) return Fail("generate", ids.status());
      encoded.push_back(std::move(*ids));
    }
  }
  std::mutex mu;
  std::condition_variable cv;
  size_t done = 0;
  Status first_error;
  std::vector<std::vector<SampleOutput>> results(encoded.size());
  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < encoded.size(); ++i) {
    GenerationRequest request;
    request.prompt_ids = encoded[i];
    request.num_samples = args.n;
    request.sampling = args.sampling;
    request.sampling.seed = args.sampling.seed + i;
    request.on_sample = [&, i](SampleOutput&& out) {
      std::lock_guard<std::mutex> lock(mu);
      results[i].push_back(std::move(out));
    };
    request.on_done = [&](const Status& s) {
      std::lock_guard<std::mutex> lock(mu);
      if (!s.ok() && first_error.ok()) first_error = s;
      ++done;
      cv.notify_all();
    };
    auto id = (*engine)->Submit(std::move(request));
    if (!id.ok()) return Fail("generate", id.status());
  }
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return done == encoded.size(); });
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!first_error.ok()) return Fail("generate", first_error);

  std::ofstream file;
  if (!args.out.empty()) {
    file.open(args.out);
    if (!file) return Fail("generate", Unavailable("cannot write --out '" + args.out + "'"));
  }
  uint64_t tokens = 0;
  for (size_t i = 0; i < results.size(); ++i) {
    std::sort(results[i].begin(), results[i].end(),
              [](const SampleOutput& a, const SampleOutput& b) { return a.sample_index < b.sample_index; });
    for (const auto& r : results[i]) {
      tokens += r.token_ids.size();
      nlohmann::json j = {{"prompt_index", i},
                          {"sample_index", r.sample_index},
                          {"text", r.text},
                          {"token_ids", r.token_ids},
                          {"finish_reason", r.finish_reason}};
      if (args.logprobs) j["logprobs"] = r.logprobs;
      if (file.is_open()) {
        file << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      } else {
        std::cout << "[" << i << "." << r.sample_index << "] " << r.text << "\n";
      }
    }
  }
  std::cerr << "generated " << tokens << " tokens in " << results.size() * args.n << " samples, "
            << seconds << " s: " << tokens / std::max(seconds, 1e-9) << " tokens/s\n";
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<GenerateArgs>();
  args->sampling.max_new_tokens = 64;
  sub.add_option("--model", args->model, "HF model folder (with its tokenizer files)")->required();
  sub.add_option("--prompt", args->prompt, "one user message");
  sub.add_option("--input", args->input, "JSONL of {\"prompt\"} or {\"messages\"}");
  sub.add_option("--out", args->out, "write rollouts as JSONL here instead of printing");
  sub.add_flag("--logprobs", args->logprobs, "include per-token log-probs (temperature 1) in --out");
  sub.add_flag("--raw", args->raw, "encode the prompt text as is (no chat template)");
  sub.add_option("-n,--num-samples", args->n, "samples per prompt (K)")->check(CLI::Range(1, 1024));
  sub.add_option("--temperature", args->sampling.temperature, "0 = greedy");
  sub.add_option("--top-p", args->sampling.top_p, "nucleus mass in (0, 1]");
  sub.add_option("--top-k", args->sampling.top_k, "0 = off");
  sub.add_option("--max-new-tokens", args->sampling.max_new_tokens, "per sample");
  sub.add_option("--seed", args->sampling.seed, "seed of the first prompt (+i for prompt i)");
  sub.add_option("--stop", args->sampling.stop, "stop strings");
  sub.add_option("--max-batch", args->max_batch, "sequences decoded together");
  sub.add_option("--max-context", args->max_context, "prompt + response tokens per sequence");
  sub.add_option("--device", args->device, "cpu | cuda | cuda:N");
  sub.add_option("--dtype", args->dtype, "float32 | bfloat16 | float16 (default: float32 on cpu)");
  sub.callback([args]() { Exit(RunGenerate(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("generate", "Sample from an HF model folder with the batched engine", 52, Setup);

}  // namespace spar::cli
