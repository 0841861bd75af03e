#include "services/learner/causal_lm_policy.h"

#include <filesystem>

namespace spar {

Result<std::unique_ptr<CausalLMPolicy>> CausalLMPolicy::Load(const std::string& dir, const std::string& device,
                                                             const std::string& dtype) {
  LoadOptions options;
  try {
    options.device = torch::Device(device);
  } catch (const c10::Error&) {
    return InvalidArgument("learner.device: '" + device + "' is not a device (cpu, cuda, cuda:N)");
  }
  SPAR_ASSIGN_OR_RETURN(options.dtype, DTypeFromName(dtype));
  SPAR_ASSIGN_OR_RETURN(CausalLM model, LoadCausalLM(dir, options));
  std::string name = std::filesystem::path(dir).filename().string();
  if (name.empty()) name = std::filesystem::path(dir).parent_path().filename().string();
  return std::make_unique<CausalLMPolicy>(std::move(model), dir, name);
}

CausalLMPolicy::CausalLMPolicy(CausalLM model, std::string tokenizer_dir, std::string name)
    : model_(std::move(model)), tokenizer_dir_(std::move(tokenizer_dir)), name_(std::move(name)) {}

torch::Tensor CausalLMPolicy::Forward(const torch::Tensor& input_ids, const torch::Tensor& attention_mask) {
  ScopedAutocast autocast(device().type(), autocast_);
  return model_->Forward(input_ids, attention_mask);
}

Status CausalLMPolicy::ConfigureTraining(bool gradient_checkpointing, const std::string& compute_dtype) {
  if (compute_dtype == "float32") {
    autocast_.reset();
  } else if (compute_dtype == "bfloat16") {
    if (model_->OutputWeight().scalar_type() != torch::kFloat32)
      return InvalidArgument("learner.dtype bfloat16 autocasts over float32 master weights, but the policy's "
                             "parameters are " + std::string(c10::toString(model_->OutputWeight().scalar_type())));
    const auto type = device().type();
    if (type != torch::kCPU && type != torch::kCUDA)
      return InvalidArgument("learner.dtype bfloat16: autocast needs a cpu or cuda device");
    autocast_ = torch::kBFloat16;
  } else {
    return InvalidArgument("learner.dtype: '" + compute_dtype + "' is not one of: float32, bfloat16");
  }
  model_->SetGradientCheckpointing(gradient_checkpointing);
  return Status::Ok();
}

torch::Tensor CausalLMPolicy::MaskedSequenceLogProbs(const torch::Tensor& input_ids,
                                                     const torch::Tensor& attention_mask, const torch::Tensor& labels,
                                                     const torch::Tensor& loss_mask) {
  ScopedAutocast autocast(device().type(), autocast_);
  auto hidden = model_->Hidden(input_ids, attention_mask);  // [N, T, H]
  auto where = loss_mask.nonzero();                         // [M, 2]: (row, position)
  auto rows = where.select(1, 0), positions = where.select(1, 1);
  auto selected = hidden.index({rows, positions});          // [M, H]
  auto logits = torch::linear(selected, model_->OutputWeight());
  // log_softmax in float32 at least (float64 models stay float64).
  auto logp = torch::log_softmax(logits.to(logits.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32), -1);
  auto token = logp.gather(1, labels.index({rows, positions}).unsqueeze(1)).squeeze(1);  // [M]
  return torch::zeros({input_ids.size(0)}, token.options()).index_add(0, rows, token);
}

std::vector<torch::Tensor> CausalLMPolicy::Parameters() { return model_->parameters(); }

std::vector<std::pair<std::string, torch::Tensor>> CausalLMPolicy::NamedWeights() {
  return model_->NamedWeights();
}

std::unique_ptr<TrainablePolicy> CausalLMPolicy::FrozenCopy() {
  auto weight = model_->OutputWeight();
  CausalLMOptions options;
  options.parameters = weight.options().requires_grad(false);
  CausalLM copy(model_->config(), options);
  torch::NoGradGuard no_grad;
  Status s = AssignWeights(copy, model_->NamedWeights());
  TORCH_CHECK(s.ok(), "frozen copy: ", s.ToString());  // same architecture: cannot fail
  for (auto& p : copy->parameters()) p.set_requires_grad(false);
  copy->eval();
  auto frozen = std::make_unique<CausalLMPolicy>(std::move(copy), tokenizer_dir_, name_ + " (frozen)");
  frozen->autocast_ = autocast_;  // the reference scores in the policy's precision
  return frozen;
}

void CausalLMPolicy::SetTraining(bool training) { model_->train(training); }

Status CausalLMPolicy::Save(const std::string& dir) {
  std::string tokenizer_dir;
  if (!tokenizer_dir_.empty() && std::filesystem::exists(std::filesystem::path(tokenizer_dir_) / "tokenizer.json"))
    tokenizer_dir = tokenizer_dir_;
  return WriteHfFolder(dir, model_->config(), model_->NamedWeights(), tokenizer_dir);
}

Status CausalLMPolicy::Load(const std::string& dir) {
  SPAR_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(dir));
  return LoadWeightsInto(model_, *reader);
}

int64_t CausalLMPolicy::pad_id() const {
  const auto& c = model_->config();
  if (c.pad_token_id) return *c.pad_token_id;
  return c.primary_eos_token_id() >= 0 ? c.primary_eos_token_id() : 0;
}

torch::Device CausalLMPolicy::device() const { return model_.ptr()->OutputWeight().device(); }

}  // namespace spar
