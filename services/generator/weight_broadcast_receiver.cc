#include "services/generator/weight_broadcast_receiver.h"

#include <chrono>
#include <thread>

#include "common/logging.h"
#include "services/weights/nccl_broadcast.h"

namespace spar {

Result<std::unique_ptr<WeightBroadcastReceiver>> WeightBroadcastReceiver::Start(const GeneratorBroadcastConfig& config,
                                                                                GeneratorCore* core) {
  if (!config.enabled) return InvalidArgument("generator.weight_broadcast is not enabled");
  if (!core) return InvalidArgument("weight broadcast receiver needs a generator core");
  if (!NcclBroadcastAvailable())
    return Unimplemented("generator.weight_broadcast: this build has no NCCL (configure with SPAR_WITH_NCCL=ON)");
  std::unique_ptr<WeightBroadcastReceiver> r(new WeightBroadcastReceiver(config, core));
  r->thread_ = std::thread([p = r.get()] { p->Run(); });
  return r;
}

WeightBroadcastReceiver::WeightBroadcastReceiver(const GeneratorBroadcastConfig& config, GeneratorCore* core)
    : config_(config), core_(core) {}

WeightBroadcastReceiver::~WeightBroadcastReceiver() { Stop(); }

void WeightBroadcastReceiver::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void WeightBroadcastReceiver::Run() {
  auto log = Logger("generator");
  NcclGroupOptions o;
  o.rendezvous = config_.rendezvous;
  o.rank = config_.rank;
  o.world_size = config_.world_size;
  o.cuda_device = config_.cuda_device;
  o.timeout = std::chrono::seconds(config_.timeout_s);
  o.cancel = &stop_;
  std::unique_ptr<NcclWeightGroup> group;
  while (!stop_) {
    if (!group) {
      auto joined = NcclWeightGroup::Join(o);
      if (!joined.ok()) {
        const StatusCode code = joined.status().code();
        if (code == StatusCode::kCancelled) break;
        if (code == StatusCode::kUnimplemented || code == StatusCode::kInvalidArgument ||
            code == StatusCode::kFailedPrecondition) {
          log->error("weight broadcast: {}; this generator takes weights over UpdateWeights only",
                     joined.status().ToString());
          break;
        }
        log->warn("weight broadcast: {} (retrying)", joined.status().ToString());
        for (int i = 0; i < 4 && !stop_; ++i) std::this_thread::sleep_for(kCancelPoll);
        continue;
      }
      group = std::move(*joined);
    }
    const uint64_t current = core_->policy_version();
    auto next = group->NextVersion(current, std::chrono::seconds(1));
    if (!next.ok()) continue;  // nothing announced yet, or stopping
    const auto start = std::chrono::steady_clock::now();
    auto staged = group->Receive(*next);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (!staged.ok()) {
      if (staged.status().code() == StatusCode::kCancelled) break;
      log->error("weight broadcast: version {} not applied: {}", *next, staged.status().ToString());
      core_->RecordWeightSync(0, seconds, false);
      if (staged.status().code() != StatusCode::kAborted) group.reset();  // the communicator is gone: join again
      continue;
    }
    const uint64_t bytes = staged->total_bytes;
    auto applied = core_->ApplyWeights(*staged);
    core_->RecordWeightSync(bytes, seconds, applied.ok());
    if (applied.ok()) {
      applied_.fetch_add(1);
      log->info("weight broadcast: applied version {} ({:.1f} MB) in {:.2f} s", applied->version, bytes / 1e6, seconds);
    } else {
      log->error("weight broadcast: version {} received but not applied: {}", *next, applied.status().ToString());
    }
  }
  group.reset();  // on this thread: the communicator (aborted if a broadcast was cut) is released here
  running_ = false;
  log->info("weight broadcast: receiver stopped");
}

}  // namespace spar
