#include "services/learner/trainer.h"

#include <chrono>

#include "services/learner/losses.h"

namespace spar {

PolicyTrainer::PolicyTrainer(TrainablePolicy* policy, const LearnerConfig& config,
                             DataParallelGroup* group)
    : policy_(policy), config_(config), group_(group) {}

Status PolicyTrainer::BeginIteration(int64_t total_steps) {
  total_steps_ = std::max<int64_t>(1, total_steps);
  step_ = 0;
  std::vector<torch::Tensor> params = policy_->Parameters();
  // Every rank starts from rank 0's weights (and so from the same pi_t).
  if (group_) SPAR_RETURN_IF_ERROR(group_->BroadcastFromRankZero(params));
  if (config_.reference == "frozen_copy") {
    reference_ = policy_->FrozenCopy();
    reference_->SetTraining(false);
  } else {
    reference_.reset();
  }
  if (config_.optimizer == "adamw") {
    optimizer_ = std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(config_.learning_rate).weight_decay(config_.weight_decay));
  } else {
    // torch.optim.RMSprop defaults (alpha 0.99, eps 1e-8), as the seed used.
    optimizer_ = std::make_unique<torch::optim::RMSprop>(
        params, torch::optim::RMSpropOptions(config_.learning_rate).weight_decay(config_.weight_decay));
  }
  return Status::Ok();
}

torch::Tensor PolicyTrainer::SequenceLogps(TrainablePolicy* model, const TokenBatch& batch) {
  const auto device = model->device();
  return model
      ->MaskedSequenceLogProbs(batch.input_ids.to(device), batch.attention_mask.to(device), batch.labels.to(device),
                               batch.loss_mask.to(device))
      .view({batch.groups, batch.k});
}

Result<StepStats> PolicyTrainer::Step(const std::vector<LearnerExample>& groups) {
  if (!optimizer_) return FailedPrecondition("learner: Step before BeginIteration");
  if (groups.empty()) return InvalidArgument("learner: empty batch");
  const auto start = std::chrono::steady_clock::now();
  StepStats stats;
  stats.learning_rate = LinearWarmupLr(config_.learning_rate, step_, total_steps_, config_.warmup_ratio);
  for (auto& g : optimizer_->param_groups()) g.options().set_lr(stats.learning_rate);
  policy_->SetTraining(true);
  optimizer_->zero_grad();

  CollateOptions collate;
  collate.max_length = config_.max_length;
  collate.max_prompt_length = config_.max_prompt_length;
  collate.pad_id = policy_->pad_id();
  const int64_t n = static_cast<int64_t>(groups.size());
  const int64_t micro = std::max<int64_t>(1, (n + config_.grad_accumulation - 1) / config_.grad_accumulation);
  double loss_sum = 0;
  for (int64_t begin = 0; begin < n; begin += micro) {
    std::vector<LearnerExample> part(groups.begin() + begin, groups.begin() + std::min(n, begin + micro));
    TokenBatch batch = Collate(part, collate);
    torch::Tensor ref;
    if (reference_) {
      torch::NoGradGuard no_grad;
      ref = SequenceLogps(reference_.get(), batch);
    } else {
      if (!batch.ref_logps.defined())
        return InvalidArgument("learner.reference is generator_logprobs but examples came without ref_logprobs");
      ref = batch.ref_logps.to(policy_->device());
    }
    torch::Tensor logp = SequenceLogps(policy_, batch);
    const auto device = policy_->device();
    LossOutput out = PreferenceLoss(logp, ref, batch.win_rates.to(device), batch.mean_scores.to(device),
                                    config_.loss);
    // Weight by the micro-batch's share so the step's loss is the mean.
    torch::Tensor scaled = out.loss * (static_cast<double>(part.size()) / static_cast<double>(n));
    scaled.backward();
    loss_sum += scaled.item<double>();
    stats.tokens += batch.tokens;
  }
  std::vector<torch::Tensor> params = policy_->Parameters();
  if (group_) SPAR_RETURN_IF_ERROR(group_->AllReduceGradients(params));
  if (config_.max_grad_norm > 0) {
    stats.grad_norm = torch::nn::utils::clip_grad_norm_(params, config_.max_grad_norm);
  } else {
    double sq = 0;
    for (auto& p : params)
      if (p.grad().defined()) sq += p.grad().pow(2).sum().item<double>();
    stats.grad_norm = std::sqrt(sq);
  }
  if (!std::isfinite(stats.grad_norm) || !std::isfinite(loss_sum)) {
    optimizer_->zero_grad();
    return Internal("learner: non-finite loss or gradient at step " + std::to_string(step_) +
                    "; the step was skipped");
  }
  optimizer_->step();
  ++step_;
  stats.step = step_;
  stats.loss = loss_sum;
  stats.groups = n;
  if (group_ && group_->world_size() > 1) {
    std::vector<torch::Tensor> metric{torch::tensor({stats.loss}, torch::kFloat64)};
    SPAR_RETURN_IF_ERROR(group_->AllReduceMean(metric));
    stats.loss = metric[0].item<double>();
  }
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return stats;
}

Status PolicyTrainer::SaveOptimizer(const std::string& path) const {
  if (!optimizer_) return FailedPrecondition("no optimiser to save");
  try {
    torch::serialize::OutputArchive archive;
    optimizer_->save(archive);
    archive.write("step", torch::tensor({step_}, torch::kInt64));
    archive.write("total_steps", torch::tensor({total_steps_}, torch::kInt64));
    archive.save_to(path);
  } catch (const std::exception& e) {
    return Unavailable("cannot save optimiser state to " + path + ": " + e.what());
  }
  return Status::Ok();
}

Status PolicyTrainer::LoadOptimizer(const std::string& path) {
  if (!optimizer_) return FailedPrecondition("BeginIteration before loading optimiser state");
  try {
    torch::serialize::InputArchive archive;
    archive.load_from(path);
    optimizer_->load(archive);
    torch::Tensor t;
    archive.read("step", t);
    step_ = t.item<int64_t>();
    archive.read("total_steps", t);
    total_steps_ = t.item<int64_t>();
  } catch (const std::exception& e) {
    return DataLoss("cannot load optimiser state from " + path + ": " + e.what());
  }
  return Status::Ok();
}

}  // namespace spar
