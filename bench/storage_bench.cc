// `spar bench storage`: rollout write and scan rates of the run store on
// real RocksDB in a temporary folder.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "bench/bench.h"
#include "storage/run_store.h"

namespace spar::bench {
namespace {

struct StorageBenchOptions {
  int64_t groups = 40000;
  int64_t k = 5;
  int64_t tokens = 256;
  int64_t groups_per_batch = 1;
  std::string dir;
  bool sync = false;
};

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

std::vector<RolloutGroup> MakeGroups(const StorageBenchOptions& o, uint32_t iteration,
                                     int64_t count) {
  std::mt19937 rng(42);
  std::vector<RolloutGroup> groups(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    RolloutGroup& g = groups[static_cast<size_t>(i)];
    g.iteration = iteration;
    g.prompt_index = static_cast<uint64_t>(i);
    g.prompt_id = "prompt-" + std::to_string(i);
    g.prompt_token_ids.assign(64, 1000);
    for (int64_t s = 0; s < o.k; ++s) {
      RolloutRecord r;
      r.sample_index = static_cast<uint32_t>(s);
      r.token_ids.resize(static_cast<size_t>(o.tokens));
      r.logprobs.resize(static_cast<size_t>(o.tokens));
      for (int64_t t = 0; t < o.tokens; ++t) {
        r.token_ids[static_cast<size_t>(t)] = static_cast<int32_t>(rng() % 128256);
        r.logprobs[static_cast<size_t>(t)] = -static_cast<float>(rng() % 1000) / 100.0f;
      }
      r.text = std::string(static_cast<size_t>(o.tokens) * 4, 'a');
      r.finish_reason = FinishReasonCode::kStop;
      r.generator_id = "generator-0";
      g.rollouts.push_back(std::move(r));
    }
  }
  return groups;
}

int Run(const StorageBenchOptions& o) {
  namespace fs = std::filesystem;
  fs::path dir = o.dir.empty() ? fs::temp_directory_path() /
                                     ("spar-bench-storage-" + std::to_string(::getpid()))
                               : fs::path(o.dir);
  fs::remove_all(dir);
  RunStoreOptions options;
  options.sync_writes = o.sync;
  auto store = RunStore::Open(dir.string(), options);
  if (!store.ok()) {
    std::fprintf(stderr, "spar bench storage: %s\n", store.status().ToString().c_str());
    return 1;
  }
  std::printf("spar bench storage: %lld groups x K=%lld rollouts x %lld tokens (+log-probs), "
              "%lld group(s) per write batch, sync=%s, folder %s\n",
              static_cast<long long>(o.groups), static_cast<long long>(o.k),
              static_cast<long long>(o.tokens), static_cast<long long>(o.groups_per_batch),
              o.sync ? "on" : "off", dir.c_str());
  auto groups = MakeGroups(o, 0, o.groups);
  const double rollouts = static_cast<double>(o.groups * o.k);
  const double bytes_per_rollout = static_cast<double>(o.tokens) * 4 * 3;  // ids + logprobs + text

  auto t0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < groups.size(); i += static_cast<size_t>(o.groups_per_batch)) {
    Status s;
    if (o.groups_per_batch == 1) {
      s = (*store)->PutGroup(groups[i]);
    } else {
      size_t end = std::min(groups.size(), i + static_cast<size_t>(o.groups_per_batch));
      std::vector<RolloutGroup> chunk(groups.begin() + static_cast<long>(i),
                                      groups.begin() + static_cast<long>(end));
      s = (*store)->PutGroups(chunk);
    }
    if (!s.ok()) {
      std::fprintf(stderr, "spar bench storage: write failed: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  double write_s = Seconds(t0);
  double write_rate = rollouts / write_s;
  std::printf("  write: %.0f rollouts/s (%.1f MB/s of payload, %.2f s)\n", write_rate,
              write_rate * bytes_per_rollout / 1e6, write_s);

  t0 = std::chrono::steady_clock::now();
  if (Status s = (*store)->Flush(); !s.ok()) {
    std::fprintf(stderr, "spar bench storage: flush failed: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("  flush: %.2f s\n", Seconds(t0));

  // Scan twice: zero-copy views (what export and the learner feed use) and
  // whole decoded groups.
  uint64_t checksum = 0;
  size_t seen = 0;
  t0 = std::chrono::steady_clock::now();
  Status s = (*store)->ForEachRolloutView(0, [&](const RolloutView& v) {
    checksum += static_cast<uint64_t>(v.num_tokens) + static_cast<uint64_t>(v.token(0));
    ++seen;
    return true;
  });
  double scan_s = Seconds(t0);
  if (!s.ok() || seen != static_cast<size_t>(rollouts)) {
    std::fprintf(stderr, "spar bench storage: scan failed (%zu rollouts): %s\n", seen,
                 s.ToString().c_str());
    return 1;
  }
  double scan_rate = rollouts / scan_s;
  std::printf("  scan (views): %.0f rollouts/s (%.2f s)\n", scan_rate, scan_s);

  size_t group_count = 0;
  t0 = std::chrono::steady_clock::now();
  s = (*store)->ForEachGroup(0, [&](const RolloutGroup& g) {
    checksum += g.rollouts.size();
    ++group_count;
    return true;
  });
  double group_scan_s = Seconds(t0);
  double group_scan_rate = rollouts / group_scan_s;
  std::printf("  scan (decoded groups): %.0f rollouts/s (%.2f s)\n", group_scan_rate, group_scan_s);

  nlohmann::json result = {{"bench", "storage"},
                           {"groups", o.groups},
                           {"k", o.k},
                           {"tokens", o.tokens},
                           {"groups_per_batch", o.groups_per_batch},
                           {"write_rollouts_per_s", write_rate},
                           {"scan_rollouts_per_s", scan_rate},
                           {"scan_decoded_rollouts_per_s", group_scan_rate},
                           {"checksum", checksum}};
  std::printf("RESULT %s\n", result.dump().c_str());
  store->reset();
  if (o.dir.empty()) fs::remove_all(dir);
  return 0;
}

void Setup(CLI::App& sub) {
  auto o = std::make_shared<StorageBenchOptions>();
  sub.add_option("--groups", o->groups, "prompt groups to write")->capture_default_str()
      ->check(CLI::Range(1, 100000000));
  sub.add_option("--k", o->k, "rollouts per group")->capture_default_str()->check(CLI::Range(1, 64));
  sub.add_option("--tokens", o->tokens, "tokens per rollout")->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  sub.add_option("--groups-per-batch", o->groups_per_batch, "groups per RocksDB write batch")
      ->capture_default_str()->check(CLI::Range(1, 100000));
  sub.add_option("--dir", o->dir, "folder for the database (default: a temp folder)");
  sub.add_flag("--sync", o->sync, "fsync the WAL on every write");
  sub.callback([o]() { cli::Exit(Run(*o)); });
}

}  // namespace

SPAR_REGISTER_BENCH("storage", "Run-store rollout write and scan rates (RocksDB)", Setup);

}  // namespace spar::bench
