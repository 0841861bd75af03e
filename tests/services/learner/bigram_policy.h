// A small real LibTorch language model (token embedding -> tanh -> linear
// head) behind TrainablePolicy, for learner tests that need fast training.
#pragma once

#include <torch/torch.h>

#include "services/learner/policy.h"

namespace spar {

struct BigramLmImpl : torch::nn::Module {
  BigramLmImpl(int64_t vocab, int64_t hidden) {
    embed = register_module("embed", torch::nn::Embedding(vocab, hidden));
    head = register_module("head", torch::nn::Linear(hidden, vocab));
  }
  torch::Tensor forward(const torch::Tensor& ids) { return head(torch::tanh(embed(ids))); }
  torch::nn::Embedding embed{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(BigramLm);

class BigramPolicy : public TrainablePolicy {
 public:
  explicit BigramPolicy(int64_t seed) : model_(32, 8) {
    torch::manual_seed(seed);
    model_ = BigramLm(32, 8);
    model_->to(torch::kFloat64);
  }
  torch::Tensor Forward(const torch::Tensor& ids, const torch::Tensor&) override { return model_->forward(ids); }
  std::vector<torch::Tensor> Parameters() override { return model_->parameters(); }
  std::vector<std::pair<std::string, torch::Tensor>> NamedWeights() override {
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (auto& p : model_->named_parameters()) out.emplace_back(p.key(), p.value());
    return out;
  }
  std::unique_ptr<TrainablePolicy> FrozenCopy() override {
    auto copy = std::make_unique<BigramPolicy>(0);
    torch::NoGradGuard g;
    auto src = model_->parameters();
    auto dst = copy->model_->parameters();
    for (size_t i = 0; i < src.size(); ++i) {
      dst[i].copy_(src[i]);
      dst[i].set_requires_grad(false);
    }
    return copy;
  }
  void SetTraining(bool on) override { model_->train(on); }
  Status Save(const std::string& dir) override {
    torch::save(Flat(), dir + "/weights.pt");
    return Status::Ok();
  }
  Status Load(const std::string& dir) override {
    torch::Tensor flat;
    torch::load(flat, dir + "/weights.pt");
    torch::NoGradGuard g;
    int64_t offset = 0;
    for (auto& p : model_->parameters()) {
      p.copy_(flat.narrow(0, offset, p.numel()).view_as(p));
      offset += p.numel();
    }
    return Status::Ok();
  }
  int64_t vocab_size() const override { return 32; }
  int64_t pad_id() const override { return 0; }
  torch::Device device() const override { return torch::kCPU; }
  std::string name() const override { return "bigram"; }
  torch::Tensor Flat() {
    std::vector<torch::Tensor> v;
    for (auto& p : model_->parameters()) v.push_back(p.detach().reshape({-1}));
    return torch::cat(v);
  }

 private:
  BigramLm model_;
};


}  // namespace spar
