// `spar bench learner`: what the learner does per second, and how long a new
// policy version takes to reach the generators.
//
//  1. Training throughput of the SPPO step (policy forward + backward, the
//     frozen reference forward, RMSProp) on the tiny preset on the CPU:
//     tokens/s (non-pad tokens through the policy) and samples/s (prompt
//     groups of K responses), with 1 rank and with 2 ranks as two processes
//     over Gloo (this binary re-run as the workers), the same global batch.
//  2. Weight publish time, as the learner publishes (WeightStreamWriter ->
//     Generator.UpdateWeights relay chain over loopback gRPC), to 1 and to
//     3 chained generators, for the tiny preset and for a ~1 GB model built
//     from a config (written to a temp folder, deleted afterwards): the
//     fastest and the median of --publish-repeats publications each (the
//     first one also pays the receivers' first staging allocation). With
//     --copying-sender the same publications go out the way the sender did
//     before it framed buckets around the tensors: each bucket copied into
//     a fresh WeightBucket message and serialised by the generated stub
//     (two more copies of every byte, into fresh memory), for comparison.
//
// Examples are synthetic (random token ids, fixed seed): prompt and
// response lengths are flags.
#include <sys/wait.h>
#include <unistd.h>


#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "common/net.h"
#include "model/causal_lm.h"
#include "model/checkpoint.h"
#include "model/hf_config.h"
#include "services/common/server.h"
#include "services/generator/generator_config.h"
#include "services/generator/generator_core.h"
#include "services/generator/generator_service.h"
#include "services/learner/causal_lm_policy.h"
#include "services/learner/trainer.h"
#include "services/weights/weight_publisher.h"
#include "services/weights/weight_stream.h"

namespace spar::bench {
namespace {

namespace fs = std::filesystem;
constexpr const char* kName = "bench learner";

struct LearnerBenchArgs {
  std::string tokenizer = ".cache/tokenizers/llama3";
  int64_t groups = 8;            // global batch (prompt groups per step)
  int64_t k = 4;
  int64_t prompt_tokens = 64;
  int64_t response_tokens = 64;
  int64_t steps = 4;             // timed steps (after one warm-up)
  int64_t bucket_mb = 64;
  int64_t big_mb = 1000;         // size of the big model (0 = skip it)
  int64_t publish_repeats = 3;   // publications per chain (min and median reported)
  bool copying_sender = false;   // the former sender (FillBucket + generated stub), for comparison
  bool skip_train = false;
  bool skip_publish = false;
  // Worker mode (2-rank training), set when re-run by the bench itself.
  int worker_rank = -1;
  std::string worker_store;
  std::string worker_out;
  std::string worker_model;
};

double Since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}


std::vector<LearnerExample> Examples(const LearnerBenchArgs& a, int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> token(3, static_cast<int32_t>(std::min<int64_t>(vocab, 120000)) - 1);
  std::vector<LearnerExample> out;
  for (int64_t g = 0; g < a.groups; ++g) {
    LearnerExample e;
    e.prompt_id = "p" + std::to_string(g);
    for (int64_t t = 0; t < a.prompt_tokens; ++t) e.prompt_ids.push_back(token(rng));
    for (int64_t i = 0; i < a.k; ++i) {
      std::vector<int32_t> r;
      // Varying lengths, as real responses have (padding costs show).
      const int64_t len = std::max<int64_t>(1, a.response_tokens - (i * a.response_tokens) / (2 * a.k));
      for (int64_t t = 0; t < len; ++t) r.push_back(token(rng));
      e.responses.push_back(std::move(r));
      e.win_rates.push_back(static_cast<double>(i + 1) / static_cast<double>(a.k + 1));
    }
    out.push_back(std::move(e));
  }
  return out;
}

LearnerConfig TrainConfig(const LearnerBenchArgs& a) {
  LearnerConfig c;
  c.model = "bench";
  c.learning_rate = 1e-5;
  c.warmup_ratio = 0;
  c.max_length = a.prompt_tokens + a.response_tokens;
  c.max_prompt_length = a.prompt_tokens;
  return c;
}

struct TrainFigures {
  double seconds = 0;
  int64_t tokens = 0;   // global
  int64_t groups = 0;   // global
  double tokens_per_second() const { return seconds > 0 ? tokens / seconds : 0; }
  double samples_per_second() const { return seconds > 0 ? groups / seconds : 0; }
};

// Trains `steps` timed steps on this rank's share of the global batch.
Result<TrainFigures> Train(const LearnerBenchArgs& a, const std::string& model_dir, DataParallelGroup* group) {
  SPAR_ASSIGN_OR_RETURN(auto policy, CausalLMPolicy::Load(model_dir, "cpu", "float32"));
  PolicyTrainer trainer(policy.get(), TrainConfig(a), group);
  SPAR_RETURN_IF_ERROR(trainer.BeginIteration(a.steps + 1));
  const int world = group ? group->world_size() : 1, rank = group ? group->rank() : 0;
  auto all = Examples(a, policy->vocab_size(), 7);
  std::vector<LearnerExample> mine(all.begin() + a.groups * rank / world, all.begin() + a.groups * (rank + 1) / world);
  SPAR_RETURN_IF_ERROR(trainer.Step(mine).status());  // warm-up
  if (group) SPAR_RETURN_IF_ERROR(group->Barrier());
  TrainFigures f;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t s = 0; s < a.steps; ++s) {
    SPAR_ASSIGN_OR_RETURN(StepStats stats, trainer.Step(mine));
    f.tokens += stats.tokens;
    f.groups += stats.groups;
  }
  if (group) SPAR_RETURN_IF_ERROR(group->Barrier());
  f.seconds = Since(start);
  return f;
}

int RunWorker(const LearnerBenchArgs& a) {
  torch::set_num_threads(1);  // two ranks share two cores
  DataParallelOptions o;
  o.rank = a.worker_rank;
  o.world_size = 2;
  o.store_address = a.worker_store;
  o.timeout = std::chrono::minutes(5);
  auto group = DataParallelGroup::Create(o);
  if (!group.ok()) return cli::Fail(kName, group.status());
  auto f = Train(a, a.worker_model, group->get());
  if (!f.ok()) return cli::Fail(kName, f.status());
  std::ofstream(a.worker_out) << f->seconds << " " << f->tokens << " " << f->groups << "\n";
  return 0;
}

Result<TrainFigures> TrainTwoRanks(const LearnerBenchArgs& a, const std::string& model_dir, const fs::path& tmp) {
  // /proc/self/exe, not its target: the binary may have been replaced on
  // disk since it started.
  const std::string self = "/proc/self/exe";
  const std::string store = "127.0.0.1:" + std::to_string(*FreeLoopbackPort());
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    std::vector<std::string> argv = {self, "bench", "learner", "--worker-rank", std::to_string(r),
                                     "--worker-store", store, "--worker-out", (tmp / ("rank" + std::to_string(r))).string(),
                                     "--worker-model", model_dir, "--groups", std::to_string(a.groups),
                                     "--k", std::to_string(a.k), "--prompt-tokens", std::to_string(a.prompt_tokens),
                                     "--response-tokens", std::to_string(a.response_tokens), "--steps",
                                     std::to_string(a.steps)};
    pid_t pid = fork();
    if (pid < 0) return Internal("fork failed");
    if (pid == 0) {
      std::vector<char*> args;
      for (auto& s : argv) args.push_back(s.data());
      args.push_back(nullptr);
      execv(self.c_str(), args.data());
      _exit(127);
    }
    pids.push_back(pid);
  }
  TrainFigures total;
  for (int r = 0; r < 2; ++r) {
    int status = 0;
    waitpid(pids[static_cast<size_t>(r)], &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return Internal("2-rank worker " + std::to_string(r) + " failed (status " + std::to_string(status) + ")");
    TrainFigures f;
    std::ifstream in(tmp / ("rank" + std::to_string(r)));
    if (!(in >> f.seconds >> f.tokens >> f.groups)) return DataLoss("2-rank worker " + std::to_string(r) + " wrote no figures");
    total.seconds = std::max(total.seconds, f.seconds);
    total.tokens += f.tokens;
    total.groups += f.groups;
  }
  return total;
}

struct Generator {
  std::unique_ptr<GeneratorCore> core;
  std::unique_ptr<GeneratorService> service;
  RunningServer server;
  ~Generator() {
    if (server.server) server.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
};

Result<std::unique_ptr<Generator>> StartGenerator(const std::string& model_dir, const std::string& id) {
  GeneratorConfig config;
  config.id = id;
  config.model = model_dir;
  config.listen = "127.0.0.1:0";
  config.max_batch = 1;
  config.max_context = 64;
  config.limits.max_prompt_tokens = 32;
  config.sampling.max_new_tokens = 16;
  auto g = std::make_unique<Generator>();
  SPAR_ASSIGN_OR_RETURN(g->core, CreateGeneratorCore(config, nullptr));
  g->service = std::make_unique<GeneratorService>(g->core.get(), config.max_message_bytes);
  GrpcServerOptions options;
  options.address = config.listen;
  options.max_message_bytes = config.max_message_bytes;
  SPAR_ASSIGN_OR_RETURN(g->server, StartGrpcServer(options, {g->service.get()}));
  return g;
}

struct PublishFigures {
  double bytes = 0;
  double one = 0;    // seconds to 1 generator (fastest)
  double three = 0;  // seconds through a chain of 3 (fastest)
  double one_median = 0;
  double three_median = 0;
};

// The sender as it was before SerializeBucket: every bucket copied into a
// WeightBucket message, which the generated stub serialises again.
Result<double> PublishCopying(WeightStreamWriter& writer, const std::vector<std::string>& chain) {
  const auto start = std::chrono::steady_clock::now();
  auto stub = v1::Generator::NewStub(MakeChannel(chain[0]));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(20));
  v1::WeightUpdateResult result;
  auto stream = stub->UpdateWeights(&ctx, &result);
  v1::WeightStreamMessage msg;
  *msg.mutable_header() = writer.Header(std::vector<std::string>(chain.begin() + 1, chain.end()));
  bool ok = stream->Write(msg);
  for (uint32_t i = 0; ok && i < writer.bucket_count(); ++i) {
    msg.Clear();
    writer.FillBucket(i, msg.mutable_bucket());
    ok = stream->Write(msg);
  }
  if (ok) {
    SPAR_ASSIGN_OR_RETURN(auto commit, writer.Commit());
    *msg.mutable_commit() = commit;
    stream->Write(msg);
  }
  stream->WritesDone();
  grpc::Status st = stream->Finish();
  if (!st.ok()) return Internal("copying sender: " + st.error_message());
  SPAR_RETURN_IF_ERROR(CheckChainApplied(result, writer.version()));
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Publishes the folder's weights `repeats` times to 1 generator, then
// `repeats` times through 3 (a new version each time).
Result<PublishFigures> Publish(const std::string& model_dir, uint64_t bucket_bytes, int64_t repeats,
                               bool copying_sender) {
  SPAR_ASSIGN_OR_RETURN(auto policy, CausalLMPolicy::Load(model_dir, "cpu", "float32"));
  std::vector<torch::Tensor> keep;
  std::vector<WeightTensorView> views;
  PublishFigures f;
  for (auto& [name, t] : policy->NamedWeights()) {
    torch::Tensor c = t.detach().contiguous();
    keep.push_back(c);
    views.push_back({name, "F32", c.sizes().vec(), c.data_ptr(), static_cast<uint64_t>(c.nbytes())});
    f.bytes += static_cast<double>(c.nbytes());
  }
  std::vector<std::unique_ptr<Generator>> gens;
  for (int i = 0; i < 3; ++i) {
    SPAR_ASSIGN_OR_RETURN(auto g, StartGenerator(model_dir, "gen-" + std::to_string(i)));
    gens.push_back(std::move(g));
  }
  uint64_t version = 0;
  // Fastest and median seconds of `repeats` publications down `chain`.
  auto publish = [&](std::vector<std::string> chain) -> Result<std::pair<double, double>> {
    std::vector<double> seconds;
    for (int64_t r = 0; r < std::max<int64_t>(1, repeats); ++r) {
      SPAR_ASSIGN_OR_RETURN(auto writer, WeightStreamWriter::Create(++version, views, bucket_bytes));
      if (copying_sender) {
        SPAR_ASSIGN_OR_RETURN(double s, PublishCopying(writer, chain));
        seconds.push_back(s);
        continue;
      }
      SPAR_ASSIGN_OR_RETURN(auto published, PublishWeights(writer, chain, std::chrono::minutes(20)));
      seconds.push_back(published.seconds);
    }
    std::sort(seconds.begin(), seconds.end());
    return std::make_pair(seconds.front(), seconds[seconds.size() / 2]);
  };
  SPAR_ASSIGN_OR_RETURN(auto one, publish({gens[0]->server.address}));
  SPAR_ASSIGN_OR_RETURN(auto three,
                        publish({gens[0]->server.address, gens[1]->server.address, gens[2]->server.address}));
  f.one = one.first;
  f.one_median = one.second;
  f.three = three.first;
  f.three_median = three.second;
  return f;
}

Result<std::string> WriteModel(const ModelConfig& config, const fs::path& dir, const std::string& tokenizer) {
  SPAR_ASSIGN_OR_RETURN(CausalLM model, CreateCausalLM(config, 3));
  SPAR_RETURN_IF_ERROR(WriteHfFolder(dir.string(), config, model->NamedWeights(), tokenizer));
  return dir.string();
}

// A Llama of about `megabytes` MB in float32: the tiny preset's vocabulary
// and widths scaled up (hidden 768, 8 layers, untied head).
Result<ModelConfig> BigConfig(int64_t megabytes) {
  SPAR_ASSIGN_OR_RETURN(ModelConfig c, ModelConfig::Preset("llama", "small"));
  c.hidden_size = 768;
  c.intermediate_size = 3072;
  c.num_attention_heads = 12;
  c.num_key_value_heads = 4;
  c.head_dim = 64;
  c.tie_word_embeddings = false;
  const int64_t fixed = 2 * c.vocab_size * c.hidden_size;
  const int64_t per_layer = 2 * c.hidden_size * c.hidden_size + 2 * c.hidden_size * c.num_key_value_heads * c.head_dim +
                            3 * c.hidden_size * c.intermediate_size;
  c.num_hidden_layers = std::max<int64_t>(1, (megabytes * 1000000 / 4 - fixed) / per_layer);
  SPAR_RETURN_IF_ERROR(c.Validate());
  return c;
}

int Run(const LearnerBenchArgs& a) {
  if (a.worker_rank >= 0) return RunWorker(a);
  if (!fs::exists(fs::path(a.tokenizer) / "tokenizer.json"))
    return cli::Fail(kName, NotFound(a.tokenizer + "/tokenizer.json (run scripts/setup.sh or pass --tokenizer)"));
  const fs::path tmp = fs::temp_directory_path() / ("spar-learner-bench-" + std::to_string(getpid()));
  fs::create_directories(tmp);
  struct Cleanup {
    fs::path p;
    ~Cleanup() {
      std::error_code ec;
      fs::remove_all(p, ec);
    }
  } cleanup{tmp};
  auto tiny_config = ModelConfig::Preset("llama", "tiny");
  if (!tiny_config.ok()) return cli::Fail(kName, tiny_config.status());
  auto tiny = WriteModel(*tiny_config, tmp / "tiny", a.tokenizer);
  if (!tiny.ok()) return cli::Fail(kName, tiny.status());
  nlohmann::json result;
  std::printf("spar bench learner (CPU, %d torch threads)\n", torch::get_num_threads());

  if (!a.skip_train) {
    std::printf("training: SPPO step, tiny llama (%.1fM parameters), %ld groups x K=%ld, prompt %ld + response <= %ld "
                "tokens, %ld timed steps\n",
                tiny_config->NumParameters() / 1e6, a.groups, a.k, a.prompt_tokens, a.response_tokens, a.steps);
    auto one = Train(a, *tiny, nullptr);
    if (!one.ok()) return cli::Fail(kName, one.status());
    auto two = TrainTwoRanks(a, *tiny, tmp);
    if (!two.ok()) return cli::Fail(kName, two.status());
    std::printf("  %-24s %12s %12s %10s\n", "ranks", "tokens/s", "samples/s", "s/step");
    const std::string solo = "1 process (" + std::to_string(torch::get_num_threads()) + " thr)";
    std::printf("  %-24s %12.1f %12.2f %10.3f\n", solo.c_str(), one->tokens_per_second(), one->samples_per_second(),
                one->seconds / a.steps);
    std::printf("  %-24s %12.1f %12.2f %10.3f\n", "2 Gloo processes (1 thr)", two->tokens_per_second(),
                two->samples_per_second(), two->seconds / a.steps);
    result["train_1rank_tokens_per_second"] = one->tokens_per_second();
    result["train_1rank_samples_per_second"] = one->samples_per_second();
    result["train_2rank_tokens_per_second"] = two->tokens_per_second();
    result["train_2rank_samples_per_second"] = two->samples_per_second();
  }

  if (!a.skip_publish) {
    const uint64_t bucket = static_cast<uint64_t>(a.bucket_mb) << 20;
    std::printf("weight publish (UpdateWeights relay chain over loopback, %ld MB buckets, %s sender, fastest / median "
                "of %ld):\n",
                a.bucket_mb, a.copying_sender ? "copying (former)" : "zero-copy", std::max<int64_t>(1, a.publish_repeats));
    std::printf("  %-24s %10s %20s %20s\n", "model", "MB", "1 generator", "3 chained");
    auto row = [&](const std::string& label, const std::string& dir, const std::string& key) -> Status {
      SPAR_ASSIGN_OR_RETURN(PublishFigures f, Publish(dir, bucket, a.publish_repeats, a.copying_sender));
      std::printf("  %-24s %10.1f %8.3f / %7.3f s %8.3f / %7.3f s   (%.2f / %.2f GB/s)\n", label.c_str(),
                  f.bytes / 1e6, f.one, f.one_median, f.three, f.three_median, f.bytes / f.one / 1e9,
                  f.bytes / f.three / 1e9);
      result[key + "_mb"] = f.bytes / 1e6;
      result[key + "_publish_1_seconds"] = f.one;
      result[key + "_publish_3_seconds"] = f.three;
      result[key + "_publish_1_median_seconds"] = f.one_median;
      result[key + "_publish_3_median_seconds"] = f.three_median;
      return Status::Ok();
    };
    Status s = row("tiny", *tiny, "tiny");
    if (!s.ok()) return cli::Fail(kName, s);
    if (a.big_mb > 0) {
      auto big_config = BigConfig(a.big_mb);
      if (!big_config.ok()) return cli::Fail(kName, big_config.status());
      auto big = WriteModel(*big_config, tmp / "big", a.tokenizer);
      if (!big.ok()) return cli::Fail(kName, big.status());
      s = row("llama h768 x" + std::to_string(big_config->num_hidden_layers) + " layers", *big, "big");
      if (!s.ok()) return cli::Fail(kName, s);
    }
  }
  std::printf("RESULT %s\n", result.dump().c_str());
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<LearnerBenchArgs>();
  sub.add_option("--tokenizer", args->tokenizer, "tokenizer folder copied into the model folders");
  sub.add_option("--groups", args->groups, "global batch: prompt groups per optimiser step");
  sub.add_option("--k", args->k, "responses per group (K)");
  sub.add_option("--prompt-tokens", args->prompt_tokens, "prompt length");
  sub.add_option("--response-tokens", args->response_tokens, "longest response length");
  sub.add_option("--steps", args->steps, "timed optimiser steps (after one warm-up)");
  sub.add_option("--bucket-mb", args->bucket_mb, "weight-stream bucket size (MB)");
  sub.add_option("--big-mb", args->big_mb, "size of the big model for the publish figures (0 = skip)");
  sub.add_option("--publish-repeats", args->publish_repeats, "publications per chain (fastest and median shown)");
  sub.add_flag("--copying-sender", args->copying_sender,
               "publish the former way (bucket copied into a message, serialised by the stub), for comparison");
  sub.add_flag("--skip-train", args->skip_train, "only the weight publish");
  sub.add_flag("--skip-publish", args->skip_publish, "only training");
  sub.add_option("--worker-rank", args->worker_rank)->group("");  // internal: 2-rank workers
  sub.add_option("--worker-store", args->worker_store)->group("");
  sub.add_option("--worker-out", args->worker_out)->group("");
  sub.add_option("--worker-model", args->worker_model)->group("");
  sub.callback([args]() { cli::Exit(Run(*args)); });
}

}  // namespace

SPAR_REGISTER_BENCH("learner", "Learner: training tokens/s and samples/s (1 and 2 Gloo ranks), weight publish time",
                    Setup);

}  // namespace spar::bench
