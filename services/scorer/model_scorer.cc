#include "services/scorer/model_scorer.h"

#include <algorithm>
#include <filesystem>
#include <numeric>

namespace spar {

Result<std::unique_ptr<ModelScorer>> ModelScorer::Load(const ModelScorerOptions& options) {
  if (options.kind != "gpm" && options.kind != "bt")
    return InvalidArgument("scorer.kind: model scorer kinds are gpm and bt (got '" + options.kind + "')");
  if (options.model_dir.empty()) return InvalidArgument("scorer.model: missing (an HF folder with value_head)");
  LoadOptions load;
  try {
    load.device = torch::Device(options.device);
  } catch (const c10::Error&) {
    return InvalidArgument("scorer.device: '" + options.device + "' is not a device (cpu, cuda, cuda:N)");
  }
  load.model.with_lm_head = false;
  load.allowed_extra_prefixes = {"value_head.", "prompt_head."};
  SPAR_ASSIGN_OR_RETURN(CausalLM backbone, LoadCausalLM(options.model_dir, load));
  SPAR_ASSIGN_OR_RETURN(auto reader, CheckpointReader::Open(options.model_dir));
  if (!reader->Contains("value_head.weight"))
    return NotFound(options.model_dir + ": no value_head.weight (not a GPM / reward-model checkpoint)");
  PreferenceHeads heads;
  const auto dtype = backbone->OutputWeight().scalar_type();
  SPAR_ASSIGN_OR_RETURN(heads.value_head, reader->Load("value_head.weight", dtype));
  if (reader->Contains("prompt_head.weight")) {
    SPAR_ASSIGN_OR_RETURN(heads.prompt_head, reader->Load("prompt_head.weight", dtype));
  }
  SPAR_RETURN_IF_ERROR(ValidateHeads(heads, backbone->config().hidden_size));
  if (options.kind == "bt" && !heads.is_bt())
    return InvalidArgument(options.model_dir + ": value_head.weight has " + std::to_string(heads.value_head.size(0)) +
                           " rows; a Bradley-Terry model (scorer.kind bt) has 1");
  if (options.kind == "gpm" && heads.is_bt())
    return InvalidArgument(options.model_dir +
                           ": value_head.weight has 1 row: a Bradley-Terry model; set scorer.kind: bt");
  heads.value_head = heads.value_head.to(load.device);
  if (heads.prompt_head.defined()) heads.prompt_head = heads.prompt_head.to(load.device);
  SPAR_ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::FromDir(options.model_dir));
  backbone->eval();
  return std::unique_ptr<ModelScorer>(
      new ModelScorer(options, std::move(backbone), std::move(heads), std::move(tokenizer)));
}

ModelScorer::ModelScorer(ModelScorerOptions options, CausalLM backbone, PreferenceHeads heads,
                         std::unique_ptr<Tokenizer> tokenizer)
    : options_(std::move(options)),
      backbone_(std::move(backbone)),
      heads_(std::move(heads)),
      tokenizer_(std::move(tokenizer)) {}

ScorerDescription ModelScorer::Describe() const {
  ScorerDescription d;
  d.kind = options_.kind;
  d.model_name = std::filesystem::path(options_.model_dir).filename().string();
  d.k = heads_.is_bt() ? 0 : static_cast<uint32_t>(heads_.k());
  d.tau = options_.tau;
  d.has_prompt_head = heads_.prompt_head.defined();
  d.max_length = options_.max_length;
  d.convention = options_.convention;
  return d;
}

Result<ModelScorer::Encoded> ModelScorer::Encode(const ScoreGroupInput& group, const std::string& response) const {
  std::vector<ChatMessage> conversation = group.messages;
  if (conversation.empty()) conversation.push_back({"user", group.prompt_text});
  SPAR_ASSIGN_OR_RETURN(std::vector<int32_t> prompt, tokenizer_->EncodeChat(conversation, true));
  conversation.push_back({"assistant", response});
  SPAR_ASSIGN_OR_RETURN(std::vector<int32_t> full, tokenizer_->EncodeChat(conversation, false));
  // The response part is what the full rendering adds after the prompt
  // rendering (with its generation prompt); templates render the prompt
  // identically in both.
  size_t common = 0;
  while (common < prompt.size() && common < full.size() && prompt[common] == full[common]) ++common;
  std::vector<int32_t> head(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(common));
  std::vector<int32_t> tail(full.begin() + static_cast<std::ptrdiff_t>(common), full.end());
  const size_t max_length = std::max<size_t>(options_.max_length, 4);
  const size_t max_prompt = max_length / 2;
  if (head.size() > max_prompt) {
    // Keep the first token (BOS) and the end of the prompt.
    std::vector<int32_t> cut = {head.front()};
    cut.insert(cut.end(), head.end() - static_cast<std::ptrdiff_t>(max_prompt - 1), head.end());
    head = std::move(cut);
  }
  if (tail.empty()) tail.push_back(tokenizer_->eos_id());
  if (head.size() + tail.size() > max_length) tail.resize(max_length - head.size());
  Encoded e;
  e.ids = head;
  e.ids.insert(e.ids.end(), tail.begin(), tail.end());
  const int32_t eos = backbone_->config().primary_eos_token_id() >= 0 ? backbone_->config().primary_eos_token_id()
                                                                       : tokenizer_->eos_id();
  e.ids.back() = eos;  // the last token is forced to EOS, as in the GPM code
  e.prompt_last = static_cast<int64_t>(head.size()) - 1;
  if (e.prompt_last < 0) e.prompt_last = 0;
  return e;
}

Result<std::vector<GroupPreferences>> ModelScorer::Score(const std::vector<ScoreGroupInput>& groups) {
  struct Item {
    size_t group, response;
    Encoded encoded;
  };
  std::vector<Item> items;
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t r = 0; r < groups[g].responses.size(); ++r) {
      auto encoded = Encode(groups[g], groups[g].responses[r]);
      if (!encoded.ok())
        return InvalidArgument("group " + groups[g].group_id + ": " + encoded.status().message());
      items.push_back({g, r, std::move(*encoded)});
    }
  }
  std::vector<size_t> order(items.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return items[a].encoded.ids.size() < items[b].encoded.ids.size(); });
  const int64_t hidden = backbone_->config().hidden_size;
  const auto device = backbone_->OutputWeight().device();
  auto last_hidden = torch::empty({static_cast<int64_t>(items.size()), hidden}, torch::kFloat32);
  auto prompt_hidden = torch::empty({static_cast<int64_t>(items.size()), hidden}, torch::kFloat32);
  torch::NoGradGuard no_grad;
  const size_t batch = std::max<size_t>(1, options_.max_batch_responses);
  for (size_t begin = 0; begin < order.size(); begin += batch) {
    const size_t end = std::min(order.size(), begin + batch);
    int64_t width = 0;
    for (size_t i = begin; i < end; ++i) width = std::max<int64_t>(width, items[order[i]].encoded.ids.size());
    const int64_t n = static_cast<int64_t>(end - begin);
    auto ids = torch::zeros({n, width}, torch::kLong);
    auto mask = torch::zeros({n, width}, torch::kLong);
    auto last = torch::empty({n}, torch::kLong), prompt_last = torch::empty({n}, torch::kLong);
    for (int64_t row = 0; row < n; ++row) {
      const auto& e = items[order[begin + row]].encoded;
      for (size_t c = 0; c < e.ids.size(); ++c) ids[row][c] = e.ids[c];
      mask[row].narrow(0, 0, static_cast<int64_t>(e.ids.size())).fill_(1);
      last[row] = static_cast<int64_t>(e.ids.size()) - 1;
      prompt_last[row] = e.prompt_last;
    }
    auto h = backbone_->Hidden(ids.to(device), mask.to(device)).to(torch::kFloat32).cpu();
    auto rows = torch::arange(n, torch::kLong);
    auto h_last = h.index({rows, last});
    auto h_prompt = h.index({rows, prompt_last});
    for (int64_t row = 0; row < n; ++row) {
      last_hidden[static_cast<int64_t>(order[begin + row])].copy_(h_last[row]);
      prompt_hidden[static_cast<int64_t>(order[begin + row])].copy_(h_prompt[row]);
    }
  }
  PreferenceHeads heads{heads_.value_head.to(torch::kCPU, torch::kFloat32),
                        heads_.prompt_head.defined() ? heads_.prompt_head.to(torch::kCPU, torch::kFloat32)
                                                     : torch::Tensor()};
  std::vector<GroupPreferences> out;
  size_t offset = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t k = static_cast<int64_t>(groups[g].responses.size());
    auto group_last = last_hidden.narrow(0, static_cast<int64_t>(offset), k);
    if (heads.is_bt()) {
      auto rewards = BtRewards(heads, group_last);
      std::vector<double> r(rewards.data_ptr<float>(), rewards.data_ptr<float>() + k);
      SPAR_ASSIGN_OR_RETURN(auto prefs, PreferencesFromRewards(r, options_.tau, options_.convention));
      out.push_back(std::move(prefs));
    } else {
      auto embeddings = GpmEmbeddings(heads, group_last);
      // The gate depends on the prompt only; every response's copy is the same.
      auto gates = GpmGates(heads, prompt_hidden.narrow(0, static_cast<int64_t>(offset), 1)).squeeze(0);
      auto scores = GpmScoreMatrix(embeddings, gates).to(torch::kFloat64).contiguous();
      std::vector<double> s(scores.data_ptr<double>(), scores.data_ptr<double>() + k * k);
      SPAR_ASSIGN_OR_RETURN(auto prefs, PreferencesFromScores(std::move(s), static_cast<uint32_t>(k), options_.tau,
                                                              options_.convention));
      out.push_back(std::move(prefs));
    }
    offset += static_cast<size_t>(k);
  }
  return out;
}

}  // namespace spar
