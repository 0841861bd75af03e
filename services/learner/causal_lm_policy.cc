#include "services/learner/causal_lm_policy.h"

#include <filesystem>

namespace spar {

namespace {

torch::ScalarType AccumulateType(torch::ScalarType t) {
  return t == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
}

class ChunkedTokenLogProbFunction : public torch::autograd::Function<ChunkedTokenLogProbFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& hidden,
                               const torch::Tensor& weight, const torch::Tensor& labels, int64_t chunk) {
    const int64_t m = hidden.size(0);
    // The product runs in whatever dtype autocast (if on) gives it, probed on
    // one row; the weight is cast once, not once per chunk. Backward, which
    // runs without autocast, multiplies in the same dtype.
    const torch::ScalarType compute =
        m == 0 ? hidden.scalar_type()
               : torch::mm(hidden.narrow(0, 0, 1), weight.narrow(0, 0, 1).t()).scalar_type();
    const torch::Tensor w = weight.to(compute);
    torch::Tensor out = torch::empty({m}, hidden.options().dtype(AccumulateType(compute)));
    torch::Tensor logits;
    for (int64_t begin = 0; begin < m; begin += chunk) {
      const int64_t n = std::min(chunk, m - begin);
      logits = torch::mm(hidden.narrow(0, begin, n).to(compute), w.t()).to(AccumulateType(compute));
      out.narrow(0, begin, n)
          .copy_(logits.gather(1, labels.narrow(0, begin, n).unsqueeze(1)).squeeze(1) - logits.logsumexp(1));
    }
    // One chunk only: keep its logits (no more memory than the chunk budget)
    // and save backward the recomputation.
    const bool keep = m > 0 && m <= chunk && (hidden.requires_grad() || weight.requires_grad());
    ctx->save_for_backward({hidden, weight, labels, keep ? logits : torch::Tensor()});
    ctx->saved_data["chunk"] = chunk;
    ctx->saved_data["compute"] = static_cast<int64_t>(compute);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor& hidden = saved[0];
    const torch::Tensor& weight = saved[1];
    const torch::Tensor& labels = saved[2];
    const torch::Tensor& kept_logits = saved[3];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const auto compute = static_cast<torch::ScalarType>(ctx->saved_data["compute"].toInt());
    const auto accumulate = AccumulateType(compute);
    const torch::Tensor g = grad_outputs[0].to(accumulate);
    const torch::Tensor w = weight.to(compute);
    torch::Tensor grad_hidden = torch::empty_like(hidden);
    torch::Tensor grad_weight = torch::zeros(weight.sizes(), weight.options().dtype(accumulate));
    for (int64_t begin = 0; begin < hidden.size(0); begin += chunk) {
      const int64_t n = std::min(chunk, hidden.size(0) - begin);
      torch::Tensor h = hidden.narrow(0, begin, n).to(compute);
      torch::Tensor gc = g.narrow(0, begin, n).unsqueeze(1);
      // d logp[label] / d logits = onehot(label) - softmax(logits), times g.
      torch::Tensor logits = kept_logits.defined() ? kept_logits : torch::mm(h, w.t()).to(accumulate);
      torch::Tensor d = torch::softmax(logits, 1).mul_(-gc);
      d.scatter_add_(1, labels.narrow(0, begin, n).unsqueeze(1), gc);
      torch::Tensor dc = d.to(compute);
      grad_hidden.narrow(0, begin, n).copy_(torch::mm(dc, w));
      grad_weight.add_(torch::mm(dc.t(), h));
    }
    return {grad_hidden, grad_weight.to(weight.scalar_type()), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor ChunkedTokenLogProbs(const torch::Tensor& hidden, const torch::Tensor& weight,
                                   const torch::Tensor& labels, int64_t chunk_rows) {
  TORCH_CHECK(hidden.dim() == 2 && weight.dim() == 2 && hidden.size(1) == weight.size(1),
              "ChunkedTokenLogProbs: hidden [M, H] and weight [V, H] expected");
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == hidden.size(0), "ChunkedTokenLogProbs: labels [M] expected");
  return ChunkedTokenLogProbFunction::apply(hidden, weight, labels, std::max<int64_t>(1, chunk_rows));
}

int64_t TokenLogProbChunkRows(int64_t vocab_size) {
  constexpr int64_t kChunkBytes = int64_t{256} << 20;
  return std::max<int64_t>(1, kChunkBytes / (std::max<int64_t>(1, vocab_size) * 4));
}

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
  // Never [M, V] logits at once: see ChunkedTokenLogProbs.
  auto token = ChunkedTokenLogProbs(selected, model_->OutputWeight(), labels.index({rows, positions}),
                                    TokenLogProbChunkRows(vocab_size()));  // [M]
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
