#include "services/learner/learner_core.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/logging.h"
#include "spar/v1/learner.pb.h"

namespace spar {

namespace {

using Clock = std::chrono::steady_clock;

v1::TrainingExample ToProto(const LearnerExample& e) {
  v1::TrainingExample p;
  p.set_prompt_id(e.prompt_id);
  p.mutable_prompt_token_ids()->Add(e.prompt_ids.begin(), e.prompt_ids.end());
  for (size_t i = 0; i < e.responses.size(); ++i) {
    auto* r = p.add_responses();
    r->mutable_token_ids()->Add(e.responses[i].begin(), e.responses[i].end());
    if (!e.ref_logprobs.empty())
      r->mutable_ref_logprobs()->Add(e.ref_logprobs[i].begin(), e.ref_logprobs[i].end());
  }
  p.mutable_win_rates()->Add(e.win_rates.begin(), e.win_rates.end());
  p.mutable_mean_scores()->Add(e.mean_scores.begin(), e.mean_scores.end());
  p.set_policy_version(e.policy_version);
  return p;
}

// The policy's weights as stream views in their checkpoint dtype (bf16 and
// fp16 as they are, anything else as float32), contiguous, on the CPU
// (`to_cpu`, the gRPC stream) or where they are (the NCCL broadcast).
// `keep` owns the tensors the views point into.
std::vector<WeightTensorView> WeightViews(TrainablePolicy& policy, bool to_cpu, std::vector<torch::Tensor>* keep) {
  std::vector<WeightTensorView> views;
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : policy.NamedWeights()) {
    torch::Tensor c = (to_cpu ? t.detach().to(torch::kCPU) : t.detach()).contiguous();
    if (c.scalar_type() != torch::kBFloat16 && c.scalar_type() != torch::kFloat16) c = c.to(torch::kFloat32);
    const std::string dtype = c.scalar_type() == torch::kBFloat16 ? "BF16"
                              : c.scalar_type() == torch::kFloat16 ? "F16"
                                                                   : "F32";
    keep->push_back(c);
    views.push_back({name, dtype, c.sizes().vec(), c.data_ptr(), static_cast<uint64_t>(c.nbytes())});
  }
  return views;
}

}  // namespace

LearnerExample ExampleFromProto(const v1::TrainingExample& p) {
  LearnerExample e;
  e.prompt_id = p.prompt_id();
  e.prompt_ids.assign(p.prompt_token_ids().begin(), p.prompt_token_ids().end());
  bool any_ref = false;
  for (const auto& r : p.responses()) any_ref |= r.ref_logprobs_size() > 0;
  for (const auto& r : p.responses()) {
    e.responses.emplace_back(r.token_ids().begin(), r.token_ids().end());
    if (any_ref) e.ref_logprobs.emplace_back(r.ref_logprobs().begin(), r.ref_logprobs().end());
  }
  e.win_rates.assign(p.win_rates().begin(), p.win_rates().end());
  e.mean_scores.assign(p.mean_scores().begin(), p.mean_scores().end());
  e.policy_version = p.policy_version();
  return e;
}

struct LearnerCore::Command {
  v1::LearnerCommand proto;
  std::promise<Status> done;
};

Result<std::unique_ptr<LearnerCore>> LearnerCore::Create(const LearnerConfig& config,
                                                         std::unique_ptr<TrainablePolicy> policy,
                                                         std::unique_ptr<DataParallelGroup> group,
                                                         uint64_t initial_version) {
  if (!policy) return InvalidArgument("learner needs a policy");
  if (group && group->rank() != 0) return InvalidArgument("only rank 0 runs the learner core");
  Status publish = CheckPublishEverySteps(config);
  if (!publish.ok()) return publish.WithContext("learner.publish_every_steps");
  SPAR_RETURN_IF_ERROR(policy->ConfigureTraining(config.gradient_checkpointing, config.dtype));
  return std::unique_ptr<LearnerCore>(
      new LearnerCore(config, std::move(policy), std::move(group), initial_version));
}

LearnerCore::LearnerCore(const LearnerConfig& config, std::unique_ptr<TrainablePolicy> policy,
                         std::unique_ptr<DataParallelGroup> group, uint64_t version)
    : config_(config), policy_(std::move(policy)), group_(std::move(group)), version_(version) {
  trainer_ = std::make_unique<PolicyTrainer>(policy_.get(), config_, group_.get());
  progress_.policy_version = version_;
  thread_ = std::thread([this] { TrainingLoop(); });
}

LearnerCore::~LearnerCore() {
  auto stop = std::make_unique<Command>();
  stop->proto.set_stop(true);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    commands_.push_back(std::move(stop));
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::string LearnerCore::model_name() const { return policy_->name(); }

std::future<Status> LearnerCore::Post(Command command) {
  auto owned = std::make_unique<Command>(std::move(command));
  auto future = owned->done.get_future();
  {
    std::lock_guard<std::mutex> lock(mutex_);
    commands_.push_back(std::move(owned));
  }
  wake_.notify_all();
  return future;
}

void LearnerCore::MaybeQueueStep() {
  const size_t global_batch = static_cast<size_t>(config_.batch_groups) *
                              static_cast<size_t>(group_ ? group_->world_size() : 1);
  while (pending_.size() >= global_batch) {
    // Steps need one K per batch; group the waiting examples by K.
    auto command = std::make_unique<Command>();
    auto* step = command->proto.mutable_step();
    const size_t k = pending_.front().responses.size();
    std::vector<LearnerExample> rest;
    for (auto& e : pending_) {
      if (static_cast<size_t>(step->examples_size()) < global_batch && e.responses.size() == k) {
        *step->add_examples() = ToProto(e);
        seen_.push_back(std::move(e));
      } else {
        rest.push_back(std::move(e));
      }
    }
    pending_ = std::move(rest);
    commands_.push_back(std::move(command));
  }
}

Result<LearnerProgressSnapshot> LearnerCore::StartIteration(uint32_t iteration, uint64_t expected,
                                                           const std::vector<std::string>& generators) {
  for (size_t i = 0; i < generators.size(); ++i)
    if (generators[i].empty())
      return InvalidArgument("learner: StartIteration: generator_addresses[" + std::to_string(i) + "] is empty");
  Command command;
  auto* begin = command.proto.mutable_begin();
  begin->set_iteration(iteration);
  const int64_t global_batch = config_.batch_groups * (group_ ? group_->world_size() : 1);
  begin->set_total_steps(std::max<int64_t>(1, (static_cast<int64_t>(expected) + global_batch - 1) / global_batch) *
                         config_.epochs);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    // Start (or restart) from pi_t: the weights of version `iteration`.
    const bool weights_are_pi_t = version_ == iteration && progress_.step == 0 && !iteration_open_;
    if (!weights_are_pi_t) {
      std::string from = iteration == 0 ? config_.model
                                        : config_.output_dir + "/iter-" + std::to_string(iteration - 1);
      if (!std::filesystem::exists(from + "/config.json"))
        return FailedPrecondition("learner cannot start iteration " + std::to_string(iteration) +
                                  ": it holds version " + std::to_string(version_) +
                                  " and there is no checkpoint of pi_" + std::to_string(iteration) +
                                  " at " + from);
      begin->set_restore_from(from);
    }
    pending_.clear();
    seen_.clear();
    // Drop steps of an abandoned run of this iteration that did not start yet.
    std::deque<std::unique_ptr<Command>> keep;
    for (auto& c : commands_) {
      if (c->proto.has_step()) c->done.set_value(Aborted("iteration restarted"));
      else keep.push_back(std::move(c));
    }
    commands_ = std::move(keep);
  }
  const std::string restored_from = begin->restore_from();
  Status s = Post(std::move(command)).get();
  if (!s.ok()) return s;
  std::lock_guard<std::mutex> lock(mutex_);
  iteration_ = iteration;
  iteration_open_ = true;
  finishing_ = false;
  trained_iteration_ = -1;
  checkpointed_iteration_ = -1;
  version_ = iteration;
  if (!generators.empty()) publish_chain_ = generators;
  // A restarted iteration keeps counting its revisions (the generators may
  // serve one of them already).
  if (revision_iteration_ != static_cast<int64_t>(iteration)) revision_ = 0;
  revision_iteration_ = iteration;
  progress_ = LearnerProgressSnapshot();
  progress_.iteration = iteration;
  progress_.policy_version = version_;
  Logger("learner")->info("iteration {} started from pi_{}{}", iteration, iteration,
                          restored_from.empty() ? "" : " (restored from " + restored_from + ")");
  return progress_;
}

SubmitOutcome LearnerCore::Submit(std::vector<LearnerExample> examples) {
  SubmitOutcome out;
  const bool gpo = config_.loss.kind == LossKind::kGpo;
  const bool needs_ref = config_.reference == "generator_logprobs";
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& e : examples) {
    Status s = iteration_open_ ? ValidateExample(e, policy_->vocab_size(), gpo)
                               : FailedPrecondition("no iteration is open (StartIteration first)");
    if (s.ok() && needs_ref && e.ref_logprobs.empty())
      s = InvalidArgument("example '" + e.prompt_id + "': learner.reference is generator_logprobs but it has none");
    if (!s.ok()) {
      out.rejected.emplace_back(e.prompt_id, s.message());
      continue;
    }
    pending_.push_back(std::move(e));
    ++out.accepted;
  }
  progress_.examples_pending = pending_.size();
  MaybeQueueStep();
  wake_.notify_all();
  return out;
}

Result<FinishOutcome> LearnerCore::FinishIteration(uint32_t iteration, const std::vector<std::string>& generators,
                                                   const std::string& checkpoint_dir) {
  bool retry = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!iteration_open_ || iteration != iteration_)
      return FailedPrecondition("learner: FinishIteration(" + std::to_string(iteration) +
                                ") but the open iteration is " +
                                (iteration_open_ ? std::to_string(iteration_) : std::string("none")));
    // A retry after a failed publication: the iteration is trained and
    // checkpointed already; training again (extra epochs) would publish
    // other weights under the same version.
    retry = trained_iteration_ == static_cast<int64_t>(iteration);
    finishing_ = true;
    if (!generators.empty()) publish_chain_ = generators;
    // Train what is left as a last (smaller) batch per K.
    while (!retry && !pending_.empty()) {
      auto command = std::make_unique<Command>();
      const size_t k = pending_.front().responses.size();
      std::vector<LearnerExample> rest;
      for (auto& e : pending_) {
        if (e.responses.size() == k) {
          *command->proto.mutable_step()->add_examples() = ToProto(e);
          seen_.push_back(std::move(e));
        } else {
          rest.push_back(std::move(e));
        }
      }
      pending_ = std::move(rest);
      commands_.push_back(std::move(command));
    }
    // Further epochs replay the iteration's examples.
    for (int64_t epoch = 1; !retry && epoch < config_.epochs; ++epoch) {
      pending_ = seen_;
      const size_t global_batch = static_cast<size_t>(config_.batch_groups) *
                                  static_cast<size_t>(group_ ? group_->world_size() : 1);
      for (size_t b = 0; b < pending_.size(); b += global_batch) {
        auto command = std::make_unique<Command>();
        for (size_t i = b; i < std::min(pending_.size(), b + global_batch); ++i)
          *command->proto.mutable_step()->add_examples() = ToProto(pending_[i]);
        commands_.push_back(std::move(command));
      }
      pending_.clear();
    }
  }
  if (retry) return CheckpointAndPublish(iteration, generators, checkpoint_dir);
  const auto finish_started = Clock::now();
  const int64_t steps_before = Progress().step;
  {
    wake_.notify_all();
    // A no-op command to wait behind everything queued.
    Command barrier;
    barrier.proto.mutable_step();
    Status s = Post(std::move(barrier)).get();
    if (!s.ok()) return s;
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    trained_iteration_ = iteration;
    // How much training was left when the orchestrator finished sending:
    // in a pipelined run most steps happen before this point.
    Logger("learner")->info("iteration {}: {} of {} steps trained after FinishIteration arrived, in {:.2f} s",
                            iteration, progress_.step - steps_before, progress_.step,
                            std::chrono::duration<double>(Clock::now() - finish_started).count());
  }
  return CheckpointAndPublish(iteration, generators, checkpoint_dir);
}

Result<FinishOutcome> LearnerCore::CheckpointAndPublish(uint32_t iteration, const std::vector<std::string>& generators,
                                                        const std::string& checkpoint_dir) {
  FinishOutcome out;
  const std::string dir = !checkpoint_dir.empty() ? checkpoint_dir
                          : config_.output_dir.empty() ? std::string()
                          : config_.output_dir + "/iter-" + std::to_string(iteration);
  if (!dir.empty() && checkpointed_iteration_ == static_cast<int64_t>(iteration)) {
    out.checkpoint_dir = dir;  // a retry: written by the first attempt
  } else if (!dir.empty()) {
    const auto started = Clock::now();
    SPAR_RETURN_IF_ERROR(EnsureDir(dir));
    SPAR_RETURN_IF_ERROR(policy_->Save(dir));
    const double model_seconds = std::chrono::duration<double>(Clock::now() - started).count();
    SPAR_RETURN_IF_ERROR(trainer_->SaveOptimizer(dir + "/optimizer.pt"));
    const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
    Logger("learner")->info("iteration {}: checkpoint {} written in {:.2f} s (model {:.2f} s, optimiser state {:.2f} s)",
                            iteration, dir, seconds, model_seconds, seconds - model_seconds);
    nlohmann::json state = {{"policy_version", iteration + 1}, {"iteration", iteration},
                            {"steps", trainer_->step()}, {"loss", LossKindName(config_.loss.kind)}};
    SPAR_RETURN_IF_ERROR(WriteFileAtomic(dir + "/spar_learner_state.json", state.dump(2) + "\n"));
    out.checkpoint_dir = dir;
    checkpointed_iteration_ = iteration;
  }
  const uint64_t version = iteration + 1;
  if (config_.weight_sync == "nccl") {
    if (!broadcast_) {
      NcclGroupOptions o;
      o.rendezvous = config_.nccl_rendezvous;
      o.rank = 0;
      o.world_size = config_.nccl_world_size;
      o.cuda_device = config_.nccl_cuda_device;
      o.bucket_bytes = static_cast<uint64_t>(config_.bucket_mb) << 20;
      SPAR_ASSIGN_OR_RETURN(broadcast_, NcclWeightGroup::Join(o));
    }
    // Parameters as they are (device memory is broadcast from where it is).
    std::vector<torch::Tensor> keep;
    auto sent = broadcast_->Send(version, WeightViews(*policy_, /*to_cpu=*/false, &keep));
    if (!sent.ok()) return sent.status().WithContext("learner: broadcasting version " + std::to_string(version));
    out.publish.bytes = sent->bytes;
    out.publish.seconds = sent->seconds;
    out.publish.result.set_applied(true);
    out.publish.result.set_version(version);
    out.publish.result.set_node("nccl-group");
    out.published = true;
    Logger("learner")->info("broadcast version {} ({:.1f} MB, {} buckets) to {} generator(s) over NCCL in {:.2f} s",
                            version, sent->bytes / 1e6, sent->buckets, config_.nccl_world_size - 1, sent->seconds);
  } else if (!generators.empty()) {
    auto published = PublishToChain(version, 0, generators);
    if (!published.ok()) return published.status().WithContext("learner: publishing version " + std::to_string(version));
    out.publish = *published;
    out.published = true;
    Logger("learner")->info("published version {} ({:.1f} MB) to {} generator(s) in {:.2f} s ({:.2f} GB/s)",
                            version, published->bytes / 1e6, generators.size(), published->seconds,
                            published->gigabytes_per_second());
  }
  std::lock_guard<std::mutex> lock(mutex_);
  version_ = version;
  iteration_open_ = false;
  progress_.policy_version = version_;
  progress_.policy_revision = 0;
  out.policy_version = version_;
  out.progress = progress_;  // the iteration's last step, before the reset
  progress_.step = 0;
  return out;
}

Result<PublishResult> LearnerCore::PublishToChain(uint64_t version, uint64_t revision,
                                                  const std::vector<std::string>& chain) {
  // CPU tensors, alive while publishing: for float32 CPU parameters these
  // are the parameters themselves (no copy), which the publisher frames
  // straight into the stream.
  std::vector<torch::Tensor> keep;
  SPAR_ASSIGN_OR_RETURN(auto writer, WeightStreamWriter::Create(version, WeightViews(*policy_, /*to_cpu=*/true, &keep),
                                                                static_cast<uint64_t>(config_.bucket_mb) << 20,
                                                                revision));
  return PublishWeights(writer, chain, std::chrono::minutes(30));
}

void LearnerCore::PublishIntermediate(int64_t step) {
  auto log = Logger("learner");
  std::vector<std::string> chain;
  uint64_t version = 0, revision = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (finishing_ || !iteration_open_) return;
    chain = publish_chain_;
    version = version_;
    revision = revision_ + 1;
  }
  if (chain.empty()) {
    log->warn("step {}: no generator chain for the intermediate publication (the orchestrator names it at "
              "StartIteration or FinishIteration); skipped",
              step);
    return;
  }
  // Continue after the highest revision of this version the chain serves
  // (a restarted iteration or learner starts counting again).
  for (const auto& address : chain) {
    auto serving = ServingVersion(address, std::chrono::seconds(10));
    if (!serving.ok()) continue;  // the publication says what is wrong with it
    if (serving->first > version) {
      log->warn("step {}: generator at {} serves version {} already, newer than this iteration's {}; intermediate "
                "publication skipped",
                step, address, serving->first, version);
      return;
    }
    if (serving->first == version) revision = std::max(revision, serving->second + 1);
  }
  auto published = PublishToChain(version, revision, chain);
  std::lock_guard<std::mutex> lock(mutex_);
  revision_ = revision;
  if (!published.ok()) {
    ++progress_.intermediate_publish_failures;
    log->warn("step {}: intermediate publication of version {} revision {} failed; training goes on: {}", step,
              version, revision, published.status().ToString());
    return;
  }
  ++progress_.intermediate_publications;
  progress_.policy_revision = revision;
  log->info("step {}: published version {} revision {} ({:.1f} MB) to {} generator(s) in {:.2f} s ({:.2f} GB/s)",
            step, version, revision, published->bytes / 1e6, chain.size(), published->seconds,
            published->gigabytes_per_second());
}

LearnerProgressSnapshot LearnerCore::Progress() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return progress_;
}

Status LearnerCore::Execute(const Command& command) {
  const auto& p = command.proto;
  if (group_) {
    std::string bytes = p.SerializeAsString();
    SPAR_RETURN_IF_ERROR(group_->BroadcastBytes(&bytes));
  }
  if (p.has_begin()) {
    if (!p.begin().restore_from().empty()) SPAR_RETURN_IF_ERROR(policy_->Load(p.begin().restore_from()));
    return trainer_->BeginIteration(p.begin().total_steps());
  }
  if (p.has_step()) {
    if (p.step().examples_size() == 0) return Status::Ok();
    const int world = group_ ? group_->world_size() : 1;
    const int rank = group_ ? group_->rank() : 0;
    const int n = p.step().examples_size();
    std::vector<LearnerExample> mine;
    for (int i = n * rank / world; i < n * (rank + 1) / world; ++i) mine.push_back(ExampleFromProto(p.step().examples(i)));
    if (mine.empty()) mine.push_back(ExampleFromProto(p.step().examples(n - 1)));
    auto stats = trainer_->Step(mine);
    if (!stats.ok()) return stats.status();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      progress_.step = stats->step;
      progress_.loss = stats->loss;
      progress_.learning_rate = stats->learning_rate;
      progress_.grad_norm = stats->grad_norm;
      progress_.examples_seen += static_cast<uint64_t>(n);
      if (stats->seconds > 0) {
        progress_.tokens_per_second = static_cast<double>(stats->tokens) * world / stats->seconds;
        progress_.samples_per_second = static_cast<double>(n) / stats->seconds;
      }
      progress_.examples_pending = pending_.size();
    }
    if (config_.publish_every_steps > 0 && stats->step % config_.publish_every_steps == 0)
      PublishIntermediate(stats->step);
    return Status::Ok();
  }
  return Status::Ok();
}

void LearnerCore::TrainingLoop() {
  auto log = Logger("learner");
  for (;;) {
    std::unique_ptr<Command> command;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      auto waited = Clock::now();
      wake_.wait(lock, [&] { return !commands_.empty(); });
      progress_.seconds_waiting_for_data += std::chrono::duration<double>(Clock::now() - waited).count();
      command = std::move(commands_.front());
      commands_.pop_front();
    }
    if (command->proto.has_stop()) {
      if (group_) {
        std::string bytes = command->proto.SerializeAsString();
        group_->BroadcastBytes(&bytes).IgnoreError();  // followers exit either way
      }
      command->done.set_value(Status::Ok());
      return;
    }
    Status s;
    try {
      s = Execute(*command);
    } catch (const std::exception& e) {
      s = Internal(std::string("learner step failed: ") + e.what());
    }
    if (!s.ok()) log->error("{}", s.ToString());
    command->done.set_value(s);
  }
}

Status LearnerCore::RunFollower(const LearnerConfig& config, std::unique_ptr<TrainablePolicy> policy,
                                std::unique_ptr<DataParallelGroup> group) {
  SPAR_RETURN_IF_ERROR(policy->ConfigureTraining(config.gradient_checkpointing, config.dtype));
  PolicyTrainer trainer(policy.get(), config, group.get());
  for (;;) {
    std::string bytes;
    SPAR_RETURN_IF_ERROR(group->BroadcastBytes(&bytes));
    v1::LearnerCommand p;
    if (!p.ParseFromString(bytes)) return DataLoss("learner rank " + std::to_string(group->rank()) + ": bad command");
    if (p.has_stop()) return Status::Ok();
    if (p.has_begin()) {
      if (!p.begin().restore_from().empty()) SPAR_RETURN_IF_ERROR(policy->Load(p.begin().restore_from()));
      SPAR_RETURN_IF_ERROR(trainer.BeginIteration(p.begin().total_steps()));
    } else if (p.has_step() && p.step().examples_size() > 0) {
      const int world = group->world_size(), rank = group->rank();
      const int n = p.step().examples_size();
      std::vector<LearnerExample> mine;
      for (int i = n * rank / world; i < n * (rank + 1) / world; ++i) mine.push_back(ExampleFromProto(p.step().examples(i)));
      if (mine.empty()) mine.push_back(ExampleFromProto(p.step().examples(n - 1)));
      auto stats = trainer.Step(mine);
      if (!stats.ok()) return stats.status();
    }
  }
}

}  // namespace spar
