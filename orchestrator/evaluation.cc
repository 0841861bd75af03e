#include "orchestrator/evaluation.h"

#include <chrono>
#include <future>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "orchestrator/pipeline.h"

namespace spar {

namespace {

constexpr char kBaselineDocument[] = "eval/baseline";
// The seed stream of held-out sampling, apart from every training shard's.
constexpr uint32_t kHeldOutSeedIteration = 0xFFFFFFFFu;

}  // namespace

double CrossWinRate(const std::vector<double>& probabilities, uint32_t k, uint32_t k_new) {
  double sum = 0;
  uint64_t n = 0;
  for (uint32_t i = 0; i < k_new; ++i) {
    for (uint32_t j = k_new; j < k; ++j) {
      sum += probabilities[static_cast<size_t>(i) * k + j];
      ++n;
    }
  }
  return n > 0 ? sum / static_cast<double>(n) : 0.5;
}

HeldOutEvaluator::HeldOutEvaluator(RunStore* store, std::vector<PromptRecord> prompts,
                                   std::vector<GeneratorClient*> generators, ScorerClient* scorer,
                                   HeldOutOptions options)
    : store_(store),
      prompts_(std::move(prompts)),
      generators_(std::move(generators)),
      scorer_(scorer),
      options_(std::move(options)) {}

Result<std::vector<RolloutGroup>> HeldOutEvaluator::Sample() {
  if (generators_.empty()) return FailedPrecondition("held-out judging: no generators");
  // One request per prompt, spread over the generators; a prompt whose
  // generator fails goes to the next one (the same seed samples the same
  // responses anywhere).
  std::vector<std::future<Result<RolloutGroup>>> futures;
  futures.reserve(prompts_.size());
  for (size_t i = 0; i < prompts_.size(); ++i) {
    futures.push_back(std::async(std::launch::async, [this, i]() -> Result<RolloutGroup> {
      const uint64_t seed = PromptSeed(options_.seed, kHeldOutSeedIteration, i);
      Status last = Unavailable("no generator tried");
      for (size_t attempt = 0; attempt < generators_.size(); ++attempt) {
        GeneratorClient* g = generators_[(i + attempt) % generators_.size()];
        auto group = g->Generate(prompts_[i], options_.generation, seed, options_.timeout);
        if (group.ok()) return group;
        last = group.status();
        Logger("eval")->warn("held-out prompt {} on {}: {}", prompts_[i].prompt_id, g->name(), last.ToString());
      }
      return last;
    }));
  }
  std::vector<RolloutGroup> groups;
  Status first_error = Status::Ok();
  for (auto& f : futures) {
    auto group = f.get();  // every future is waited for, even after an error
    if (!group.ok()) {
      if (first_error.ok()) first_error = group.status();
      continue;
    }
    groups.push_back(std::move(*group));
  }
  if (!first_error.ok()) return first_error;
  return groups;
}

Status HeldOutEvaluator::EnsureBaseline(uint64_t serving_version) {
  if (prompts_.empty() || !baseline_.empty()) return Status::Ok();
  SPAR_ASSIGN_OR_RETURN(auto stored, store_->GetDocument(kBaselineDocument));
  if (stored) {
    auto j = nlohmann::json::parse(*stored, nullptr, false);
    auto bad = [&](const std::string& why) {
      return DataLoss("run store: held-out baseline (" + std::string(kBaselineDocument) + ") " + why);
    };
    if (j.is_discarded() || !j.contains("prompts") || !j["prompts"].is_array()) return bad("is not valid JSON");
    if (j["prompts"].size() != prompts_.size())
      return FailedPrecondition("the run store's held-out baseline has " + std::to_string(j["prompts"].size()) +
                                " prompts but run.held_out gives " + std::to_string(prompts_.size()) +
                                "; the prompt set or run.held_out changed since the run started");
    for (size_t i = 0; i < prompts_.size(); ++i) {
      const auto& p = j["prompts"][i];
      if (!p.is_object() || !p.contains("prompt_id") || !p.contains("responses") || !p["responses"].is_array())
        return bad("entry " + std::to_string(i) + " lacks prompt_id or responses");
      if (p["prompt_id"] != prompts_[i].prompt_id)
        return FailedPrecondition("held-out prompt " + std::to_string(i) + " is " + prompts_[i].prompt_id +
                                  " but the run store's baseline has " + p["prompt_id"].dump() +
                                  "; the prompt set changed since the run started");
      RolloutGroup g;
      g.prompt_index = i;
      g.prompt_id = prompts_[i].prompt_id;
      for (const auto& text : p["responses"]) {
        if (!text.is_string()) return bad("entry " + std::to_string(i) + " has a non-text response");
        RolloutRecord r;
        r.sample_index = static_cast<uint32_t>(g.rollouts.size());
        r.text = text.get<std::string>();
        g.rollouts.push_back(std::move(r));
      }
      if (g.rollouts.empty()) return bad("entry " + std::to_string(i) + " has no responses");
      baseline_.push_back(std::move(g));
    }
    return Status::Ok();
  }
  if (serving_version != 0)
    return FailedPrecondition("no held-out baseline in the run store and the generators already serve version " +
                              std::to_string(serving_version) + "; set run.held_out: 0 to run without judging");
  const auto start = std::chrono::steady_clock::now();
  SPAR_ASSIGN_OR_RETURN(auto groups, Sample());
  nlohmann::json doc = {{"policy_version", 0}, {"prompts", nlohmann::json::array()}};
  for (size_t i = 0; i < groups.size(); ++i) {
    nlohmann::json responses = nlohmann::json::array();
    for (const auto& r : groups[i].rollouts) responses.push_back(r.text);
    doc["prompts"].push_back({{"prompt_id", prompts_[i].prompt_id}, {"responses", responses}});
  }
  SPAR_RETURN_IF_ERROR(store_->PutDocument(kBaselineDocument, doc.dump()));
  baseline_ = std::move(groups);
  Logger("eval")->info("held-out baseline: {} prompts x {} responses of pi_0 in {:.1f} s", baseline_.size(),
                       options_.generation.samples_per_prompt,
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return Status::Ok();
}

Result<HeldOutResult> HeldOutEvaluator::Judge(uint64_t version) {
  HeldOutResult result;
  result.policy_version = version;
  if (prompts_.empty()) return result;
  if (baseline_.size() != prompts_.size())
    return FailedPrecondition("held-out judging before the baseline was loaded");
  const auto start = std::chrono::steady_clock::now();
  SPAR_ASSIGN_OR_RETURN(auto groups, Sample());
  // One group per prompt: the new responses, then pi_0's.
  std::vector<RolloutGroup> combined(groups.size());
  std::vector<const PromptRecord*> prompts;
  std::vector<const RolloutGroup*> views;
  std::vector<uint32_t> k_new(groups.size());
  for (size_t i = 0; i < groups.size(); ++i) {
    combined[i].prompt_index = i;
    combined[i].prompt_id = prompts_[i].prompt_id;
    combined[i].rollouts = std::move(groups[i].rollouts);
    k_new[i] = static_cast<uint32_t>(combined[i].rollouts.size());
    for (const auto& r : baseline_[i].rollouts) combined[i].rollouts.push_back(r);
    for (size_t s = 0; s < combined[i].rollouts.size(); ++s) combined[i].rollouts[s].sample_index = s;
    prompts.push_back(&prompts_[i]);
    views.push_back(&combined[i]);
  }
  SPAR_ASSIGN_OR_RETURN(auto scores, scorer_->Score(prompts, views, options_.timeout));
  double sum = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    const uint32_t k = scores[i].k;
    sum += CrossWinRate(scores[i].probabilities, k, k_new[i]);
    result.comparisons += static_cast<uint64_t>(k_new[i]) * (k - k_new[i]);
  }
  result.prompts = scores.size();
  result.win_rate = scores.empty() ? 0.5 : sum / static_cast<double>(scores.size());
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace spar
