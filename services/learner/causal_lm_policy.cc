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
  return model_->Forward(input_ids, attention_mask);
}

torch::Tensor CausalLMPolicy::MaskedSequenceLogProbs(const torch::Tensor& input_ids,
                                                     const torch::Tensor& attention_mask, const torch::Tensor& labels,
                                                     const torch::Tensor& loss_mask) {
  auto hidden = model_->Hidden(input_ids, attention_mask);  // [N, T, H]
  auto where = loss_mask.nonzero();                         // [M, 2]: (row, position)
  auto rows = where.select(1, 0), positions = where.select(1, 1);
  auto selected = hidden.index({rows, positions});          // [M, H]
  auto logp = torch::log_softmax(torch::linear(selected, model_->OutputWeight()).to(torch::kFloat32), -1);
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
  return std::make_unique<CausalLMPolicy>(std::move(copy), tokenizer_dir_, name_ + " (frozen)");
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
