// `spar bench generator`: what the Generator service costs over the engine
// it wraps, and how fast weights travel to it.
//
//  1. Rollouts/s and tokens/s for the same load (N prompts x K samples,
//     fixed seeds, `--concurrency` requests in flight) run (a) straight
//     through a GenerationEngine in this process and (b) through the real
//     Generator gRPC service on loopback, driven by the orchestrator's
//     client. Both sides load the same model folder, render the same prompt
//     ids and use the same per-prompt seeds, so they sample the same tokens;
//     the token counts are printed so any difference shows.
//  2. Weight-stream GB/s over loopback: the model's weights as version 1 to
//     one generator and as version 2 through a chain of three, next to a
//     plain memcpy of the same bytes.
//
// The model is a random-weight preset written as an HF folder to a temp
// directory (with the tokenizer from --tokenizer); `--preset small` gives
// about four times the weight bytes of the default `tiny`.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "common/files.h"
#include "model/causal_lm.h"
#include "model/checkpoint.h"
#include "model/engine.h"
#include "model/hf_config.h"
#include "orchestrator/clients.h"
#include "services/common/server.h"
#include "services/generator/generator_config.h"
#include "services/generator/generator_core.h"
#include "services/generator/generator_service.h"
#include "services/weights/weight_publisher.h"
#include "services/weights/weight_stream.h"
#include "tokenizer/tokenizer.h"

namespace spar::bench {
namespace {

namespace fs = std::filesystem;

struct GeneratorBenchArgs {
  std::string arch = "llama";
  std::string preset = "tiny";
  std::string tokenizer = ".cache/tokenizers/llama3";
  int64_t prompts = 16;         // N
  int64_t samples = 4;          // K
  int64_t max_new_tokens = 32;
  int64_t concurrency = 4;      // requests in flight (client threads)
  int64_t max_batch = 16;       // engine decode slots
  int64_t max_context = 512;
  double temperature = 1.0;
  uint64_t seed = 1234;
  int64_t bucket_mb = 8;        // weight-stream bucket size
  int64_t repeats = 3;          // runs of each measurement (min and median printed)
  bool skip_generate = false;
  bool skip_weights = false;
};

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string PromptText(int64_t i) {
  static const char* kTopics[] = {"the sea", "a lighthouse keeper", "prime numbers", "a lost key",
                                  "autumn rain", "a robot learning to paint", "the last train home",
                                  "a city under snow"};
  std::string text = "Write a short story (number " + std::to_string(i) + ") about " +
                     kTopics[i % (sizeof(kTopics) / sizeof(kTopics[0]))] + ".";
  for (int64_t r = 0; r < i % 3; ++r) text += " Keep it simple and vivid.";
  return text;
}

// Runs `work(i)` for i in [0, n) on `threads` threads; the first error wins.
Status RunConcurrently(int64_t n, int64_t threads, const std::function<Status(int64_t)>& work) {
  std::atomic<int64_t> next{0};
  std::mutex mu;
  Status first;
  std::vector<std::thread> pool;
  for (int64_t t = 0; t < std::max<int64_t>(1, threads); ++t) {
    pool.emplace_back([&]() {
      for (int64_t i = next++; i < n; i = next++) {
        Status s = work(i);
        if (!s.ok()) {
          std::lock_guard<std::mutex> lock(mu);
          if (first.ok()) first = s;
          return;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  return first;
}

struct Spread {
  double min = 0;
  double median = 0;
};

Spread SpreadOf(std::vector<double> v) {
  Spread s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.min = v.front();
  s.median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  return s;
}

struct LoadFigures {
  double seconds = 0;
  uint64_t rollouts = 0;
  uint64_t tokens = 0;
  double rollouts_per_second() const { return seconds > 0 ? rollouts / seconds : 0; }
  double tokens_per_second() const { return seconds > 0 ? tokens / seconds : 0; }
};

struct Generator {
  std::unique_ptr<GeneratorCore> core;
  std::unique_ptr<GeneratorService> service;
  RunningServer server;
};

Result<Generator> StartGenerator(const std::string& model_dir, const std::string& id,
                                 const GeneratorBenchArgs& args) {
  GeneratorConfig config;
  config.id = id;
  config.model = model_dir;
  config.listen = "127.0.0.1:0";
  config.max_batch = static_cast<int32_t>(args.max_batch);
  config.max_context = static_cast<int32_t>(args.max_context);
  config.limits.max_samples = static_cast<uint32_t>(std::max<int64_t>(args.samples, 1));
  config.limits.max_prompt_tokens = static_cast<int32_t>(args.max_context - args.max_new_tokens);
  Generator g;
  SPAR_ASSIGN_OR_RETURN(g.core, CreateGeneratorCore(config, nullptr));
  g.service = std::make_unique<GeneratorService>(g.core.get(), config.max_message_bytes);
  GrpcServerOptions options;
  options.address = config.listen;
  options.max_message_bytes = config.max_message_bytes;
  SPAR_ASSIGN_OR_RETURN(g.server, StartGrpcServer(options, {g.service.get()}));
  return g;
}

void StopGenerator(Generator& g) {
  if (g.server.server) g.server.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  g.server.server.reset();
  g.service.reset();
  g.core.reset();
}

int Run(const GeneratorBenchArgs& args) {
  const char* kName = "bench generator";
  if (args.prompts <= 0 || args.samples <= 0 || args.max_new_tokens <= 0 || args.concurrency <= 0 ||
      args.bucket_mb <= 0 || args.repeats <= 0)
    return cli::Fail(kName, InvalidArgument("--prompts, --samples, --max-new-tokens, --concurrency, "
                                            "--bucket-mb and --repeats must be > 0"));
  auto config = ModelConfig::Preset(args.arch, args.preset);
  if (!config.ok()) return cli::Fail(kName, config.status());

  // The model folder: random weights of the preset, the given tokenizer.
  const fs::path dir = fs::temp_directory_path() / ("spar-bench-generator-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{dir};
  const std::string model_dir = (dir / "model").string();
  auto created = CreateCausalLM(*config, 7);
  if (!created.ok()) return cli::Fail(kName, created.status());
  CausalLM source = *created;
  {
    Status s = EnsureDir(dir.string());
    if (!s.ok()) return cli::Fail(kName, s);
  }
  Status written = WriteHfFolder(model_dir, *config, source->NamedWeights(), args.tokenizer);
  if (!written.ok()) return cli::Fail(kName, written);
  std::printf("model %s/%s: %.1fM parameters, folder %s\n", args.arch.c_str(), args.preset.c_str(),
              config->NumParameters() / 1e6, model_dir.c_str());
  nlohmann::json result = {{"bench", "generator"}, {"arch", args.arch}, {"preset", args.preset},
                           {"parameters", config->NumParameters()}};

  // Generator 0 serves the gRPC load and heads the weight chain.
  auto gen0 = StartGenerator(model_dir, "gen-0", args);
  if (!gen0.ok()) return cli::Fail(kName, gen0.status());

  if (!args.skip_generate) {
    GenerationConfig gen_config;
    gen_config.samples_per_prompt = static_cast<uint32_t>(args.samples);
    gen_config.temperature = args.temperature;
    gen_config.top_p = 1.0;
    gen_config.top_k = 0;
    gen_config.max_new_tokens = static_cast<int32_t>(args.max_new_tokens);
    SamplingOptions sampling;
    sampling.temperature = static_cast<float>(gen_config.temperature);
    sampling.top_p = static_cast<float>(gen_config.top_p);
    sampling.top_k = gen_config.top_k;
    sampling.max_new_tokens = gen_config.max_new_tokens;

    // The prompt ids exactly as the service renders them.
    std::vector<std::vector<int32_t>> prompt_ids(args.prompts);
    for (int64_t i = 0; i < args.prompts; ++i) {
      PromptInput p;
      p.prompt_id = "p" + std::to_string(i);
      p.text = PromptText(i);
      auto ids = (*gen0).core->RenderPrompt(p, "prompts[" + std::to_string(i) + "]");
      if (!ids.ok()) return cli::Fail(kName, ids.status());
      prompt_ids[i] = std::move(*ids);
    }
    std::printf("load: %ld prompts x %ld samples, %ld new tokens max, temperature %.2f, seeds %lu+i, "
                "%ld requests in flight, %ld decode slots\n",
                static_cast<long>(args.prompts), static_cast<long>(args.samples),
                static_cast<long>(args.max_new_tokens), args.temperature, static_cast<unsigned long>(args.seed),
                static_cast<long>(args.concurrency), static_cast<long>(args.max_batch));

    // (a) In process: an engine over its own copy of the same folder.
    auto model = LoadCausalLM(model_dir);
    if (!model.ok()) return cli::Fail(kName, model.status());
    (*model)->eval();
    auto tok = Tokenizer::FromDir(model_dir);
    if (!tok.ok()) return cli::Fail(kName, tok.status());
    EngineOptions engine_options;
    engine_options.max_batch = static_cast<int32_t>(args.max_batch);
    engine_options.max_context = static_cast<int32_t>(args.max_context);
    auto engine = GenerationEngine::Create(*model, std::shared_ptr<const Tokenizer>(std::move(*tok)), engine_options);
    if (!engine.ok()) return cli::Fail(kName, engine.status());
    {  // warm-up
      SamplingOptions w = sampling;
      w.max_new_tokens = 4;
      auto out = (*engine)->Generate(prompt_ids[0], 1, w);
      if (!out.ok()) return cli::Fail(kName, out.status());
    }
    auto run_local = [&]() -> Result<LoadFigures> {
      std::atomic<uint64_t> rollouts{0}, tokens{0};
      auto t = std::chrono::steady_clock::now();
      Status s = RunConcurrently(args.prompts, args.concurrency, [&](int64_t i) -> Status {
        SamplingOptions so = sampling;
        so.seed = args.seed + static_cast<uint64_t>(i);
        SPAR_ASSIGN_OR_RETURN(auto out, (*engine)->Generate(prompt_ids[i], static_cast<uint32_t>(args.samples), so));
        for (const auto& o : out) tokens += o.token_ids.size();
        rollouts += out.size();
        return Status();
      });
      LoadFigures f;
      f.seconds = Since(t);
      if (!s.ok()) return s;
      f.rollouts = rollouts;
      f.tokens = tokens;
      return f;
    };

    // (b) Through the Generator service on loopback, with the orchestrator's client.
    auto client = MakeGrpcGeneratorClient("gen-0", (*gen0).server.address);
    {  // warm-up (channel, first request)
      PromptRecord p;
      p.prompt_id = "warmup";
      p.text = PromptText(0);
      GenerationConfig w = gen_config;
      w.samples_per_prompt = 1;
      w.max_new_tokens = 4;
      auto out = client->Generate(p, w, args.seed, std::chrono::minutes(5));
      if (!out.ok()) return cli::Fail(kName, out.status());
    }
    std::atomic<int64_t> prompt_mismatch{0};
    auto run_remote = [&]() -> Result<LoadFigures> {
      std::atomic<uint64_t> rollouts{0}, tokens{0};
      auto t = std::chrono::steady_clock::now();
      Status s = RunConcurrently(args.prompts, args.concurrency, [&](int64_t i) -> Status {
        PromptRecord p;
        p.prompt_index = static_cast<uint64_t>(i);
        p.prompt_id = "p" + std::to_string(i);
        p.text = PromptText(i);
        SPAR_ASSIGN_OR_RETURN(auto group, client->Generate(p, gen_config, args.seed + static_cast<uint64_t>(i),
                                                           std::chrono::minutes(5)));
        if (group.prompt_token_ids != prompt_ids[i]) ++prompt_mismatch;
        for (const auto& r : group.rollouts) tokens += r.token_ids.size();
        rollouts += group.rollouts.size();
        return Status();
      });
      LoadFigures f;
      f.seconds = Since(t);
      if (!s.ok()) return s;
      f.rollouts = rollouts;
      f.tokens = tokens;
      return f;
    };

    // Alternate the two so both see the same machine load; min and median.
    std::vector<double> local_tps, remote_tps, local_rps, remote_rps;
    LoadFigures local, remote;
    for (int64_t r = 0; r < args.repeats; ++r) {
      auto l = run_local();
      if (!l.ok()) return cli::Fail(kName, l.status());
      auto g = run_remote();
      if (!g.ok()) return cli::Fail(kName, g.status());
      local = *l;
      remote = *g;
      local_tps.push_back(l->tokens_per_second());
      remote_tps.push_back(g->tokens_per_second());
      local_rps.push_back(l->rollouts_per_second());
      remote_rps.push_back(g->rollouts_per_second());
      std::printf("run %ld: in-process %8.1f tokens/s (%.2f s), gRPC %8.1f tokens/s (%.2f s)\n",
                  static_cast<long>(r + 1), l->tokens_per_second(), l->seconds, g->tokens_per_second(), g->seconds);
    }
    if (prompt_mismatch > 0)
      std::printf("note: %ld prompt(s) rendered differently by the service\n",
                  static_cast<long>(prompt_mismatch.load()));
    // Higher is better: "min" of a rate is its worst run, so print max and median.
    auto best = [](std::vector<double> v) { return *std::max_element(v.begin(), v.end()); };
    const Spread lt = SpreadOf(local_tps), rt = SpreadOf(remote_tps);
    std::printf("in-process engine: %8.2f rollouts/s %10.1f tokens/s median, %10.1f best  (%lu rollouts, %lu tokens)\n",
                SpreadOf(local_rps).median, lt.median, best(local_tps), static_cast<unsigned long>(local.rollouts),
                static_cast<unsigned long>(local.tokens));
    std::printf("gRPC Generator:    %8.2f rollouts/s %10.1f tokens/s median, %10.1f best  (%lu rollouts, %lu tokens)\n",
                SpreadOf(remote_rps).median, rt.median, best(remote_tps), static_cast<unsigned long>(remote.rollouts),
                static_cast<unsigned long>(remote.tokens));
    if (remote.tokens != local.tokens)
      std::printf("note: token counts differ (%lu in process, %lu over gRPC); compare tokens/s\n",
                  static_cast<unsigned long>(local.tokens), static_cast<unsigned long>(remote.tokens));
    const double overhead = lt.median > 0 ? (1.0 - rt.median / lt.median) * 100 : 0;
    const double overhead_best = best(local_tps) > 0 ? (1.0 - best(remote_tps) / best(local_tps)) * 100 : 0;
    std::printf("gRPC overhead: %.1f%% of in-process tokens/s (medians), %.1f%% (best runs)\n", overhead,
                overhead_best);
    result["prompts"] = args.prompts;
    result["samples"] = args.samples;
    result["max_new_tokens"] = args.max_new_tokens;
    result["concurrency"] = args.concurrency;
    result["repeats"] = args.repeats;
    result["inprocess_rollouts_per_second"] = SpreadOf(local_rps).median;
    result["inprocess_tokens_per_second"] = lt.median;
    result["inprocess_tokens"] = local.tokens;
    result["grpc_rollouts_per_second"] = SpreadOf(remote_rps).median;
    result["grpc_tokens_per_second"] = rt.median;
    result["grpc_tokens"] = remote.tokens;
    result["grpc_overhead_percent"] = overhead;
    result["grpc_overhead_percent_best"] = overhead_best;
  }

  if (!args.skip_weights) {
    auto gen1 = StartGenerator(model_dir, "gen-1", args);
    if (!gen1.ok()) return cli::Fail(kName, gen1.status());
    auto gen2 = StartGenerator(model_dir, "gen-2", args);
    if (!gen2.ok()) return cli::Fail(kName, gen2.status());

    // Contiguous CPU float32 copies, alive while publishing (as the learner does).
    std::vector<torch::Tensor> keep;
    std::vector<WeightTensorView> views;
    {
      torch::NoGradGuard no_grad;
      for (auto& [name, t] : source->NamedWeights()) {
        torch::Tensor cpu = t.detach().to(torch::kCPU, torch::kFloat32).contiguous();
        keep.push_back(cpu);
        views.push_back({name, "F32", cpu.sizes().vec(), cpu.data_ptr(), static_cast<uint64_t>(cpu.nbytes())});
      }
    }
    const uint64_t bucket_bytes = static_cast<uint64_t>(args.bucket_mb) << 20;
    auto publish = [&](uint64_t version, const std::vector<std::string>& chain) -> Result<PublishResult> {
      SPAR_ASSIGN_OR_RETURN(auto writer, WeightStreamWriter::Create(version, views, bucket_bytes));
      SPAR_ASSIGN_OR_RETURN(auto published, PublishWeights(writer, chain, std::chrono::minutes(10)));
      SPAR_RETURN_IF_ERROR(CheckChainApplied(published.result, version));
      return published;
    };
    // Versions 1, 2, ...: each measurement repeated, alternating 1 and 3
    // generators so both see the same machine load. The first stream to a
    // generator also pays for mapping its staging buffers (kept afterwards).
    std::vector<double> one_seconds, three_seconds;
    uint64_t version = 0, bytes = 0;
    for (int64_t r = 0; r < args.repeats; ++r) {
      auto one = publish(++version, {(*gen0).server.address});
      if (!one.ok()) return cli::Fail(kName, one.status());
      auto three = publish(++version, {(*gen0).server.address, (*gen1).server.address, (*gen2).server.address});
      if (!three.ok()) return cli::Fail(kName, three.status());
      one_seconds.push_back(one->seconds);
      three_seconds.push_back(three->seconds);
      bytes = one->bytes;
    }

    // memcpy of the same bytes: into a buffer already mapped (best of 3),
    // and into fresh memory (what a new allocation per version would cost).
    std::vector<char> src(bytes, 1), dst(bytes, 0);
    double memcpy_seconds = 1e30;
    for (int r = 0; r < 3; ++r) {
      auto t = std::chrono::steady_clock::now();
      std::memcpy(dst.data(), src.data(), bytes);
      memcpy_seconds = std::min(memcpy_seconds, Since(t));
      src[r] = dst[bytes - 1 - r];  // keep the copies observable
    }
    double fresh_seconds = 0;
    {
      auto t = std::chrono::steady_clock::now();
      std::vector<char> fresh(src.begin(), src.end());
      fresh_seconds = Since(t);
      src[3] = fresh[bytes / 2];
    }
    const double memcpy_gbps = memcpy_seconds > 0 ? bytes / memcpy_seconds / 1e9 : 0;
    const double fresh_gbps = fresh_seconds > 0 ? bytes / fresh_seconds / 1e9 : 0;
    const Spread s1 = SpreadOf(one_seconds), s3 = SpreadOf(three_seconds);
    std::printf("weights: %.1f MB in %u bucket(s) of %ld MB, %ld run(s) each\n", bytes / 1e6,
                static_cast<unsigned>((bytes + bucket_bytes - 1) / bucket_bytes), static_cast<long>(args.bucket_mb),
                static_cast<long>(args.repeats));
    std::printf("stream to 1 generator:        min %7.3f s  median %7.3f s  %7.3f GB/s (at min)\n", s1.min,
                s1.median, bytes / s1.min / 1e9);
    std::printf("stream through 3 (chained):   min %7.3f s  median %7.3f s  %7.3f GB/s (at min)\n", s3.min,
                s3.median, bytes / s3.min / 1e9);
    std::printf("memcpy of the same bytes:         %7.4f s  %7.3f GB/s (into mapped memory)\n", memcpy_seconds,
                memcpy_gbps);
    std::printf("memcpy into fresh memory:         %7.4f s  %7.3f GB/s (page faults included)\n", fresh_seconds,
                fresh_gbps);
    const double ratio = s1.median > 0 ? s3.median / s1.median : 0;
    std::printf("3-chain / 1-chain time (medians): %.2fx; 1-generator stream at %.1f%% of memcpy speed (min)\n",
                ratio, memcpy_gbps > 0 ? bytes / s1.min / 1e9 / memcpy_gbps * 100 : 0.0);
    result["weight_bytes"] = bytes;
    result["bucket_mb"] = args.bucket_mb;
    result["stream_1_seconds_min"] = s1.min;
    result["stream_1_seconds_median"] = s1.median;
    result["stream_1_gb_per_second"] = bytes / s1.min / 1e9;
    result["stream_3_seconds_min"] = s3.min;
    result["stream_3_seconds_median"] = s3.median;
    result["stream_3_gb_per_second"] = bytes / s3.min / 1e9;
    result["memcpy_gb_per_second"] = memcpy_gbps;
    result["memcpy_fresh_gb_per_second"] = fresh_gbps;
    result["chain3_over_chain1"] = ratio;
    StopGenerator(*gen2);
    StopGenerator(*gen1);
  }
  StopGenerator(*gen0);
  std::printf("RESULT %s\n", result.dump().c_str());
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<GeneratorBenchArgs>();
  sub.add_option("--arch", args->arch, "llama | gemma");
  sub.add_option("--preset", args->preset, "tiny | small | ... (small streams more weight bytes)");
  sub.add_option("--tokenizer", args->tokenizer, "tokenizer folder copied into the model folder");
  sub.add_option("--prompts", args->prompts, "prompts (N)");
  sub.add_option("--samples", args->samples, "samples per prompt (K)");
  sub.add_option("--max-new-tokens", args->max_new_tokens, "response tokens per sample (at most)");
  sub.add_option("--concurrency", args->concurrency, "requests in flight (client threads)");
  sub.add_option("--max-batch", args->max_batch, "engine decode slots");
  sub.add_option("--max-context", args->max_context, "prompt + response tokens per sequence");
  sub.add_option("--temperature", args->temperature, "sampling temperature (0 = greedy)");
  sub.add_option("--seed", args->seed, "prompt i samples with seed + i");
  sub.add_option("--bucket-mb", args->bucket_mb,
                 "weight-stream bucket size (MB); a chain pipelines bucket by bucket, so keep several per model");
  sub.add_option("--repeats", args->repeats, "runs of each measurement (min and median printed)");
  sub.add_flag("--skip-generate", args->skip_generate, "only the weight stream");
  sub.add_flag("--skip-weights", args->skip_weights, "only the rollout load");
  sub.callback([args]() { cli::Exit(Run(*args)); });
}

}  // namespace

SPAR_REGISTER_BENCH("generator", "Generator gRPC vs in-process rollouts/s, and weight-stream GB/s", Setup);

}  // namespace spar::bench
