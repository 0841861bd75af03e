// spar/services/generator/weight_broadcast_receiver.h — a generator's side of
// the learner's NCCL weight-broadcast group (generator.weight_broadcast).
//
// A thread joins the group (retrying every second until the learner joins,
// which it does at its first publication), then applies every version rank
// 0 commits through GeneratorCore::ApplyWeights, the same verified atomic
// swap UpdateWeights uses. A refused or failed version leaves the generator
// on its old weights; a broken communicator is joined again. A join that
// cannot succeed by retrying (no usable GPU, bad options) ends the thread
// with an error in the log (running() turns false).
//
// Shutdown is orderly: Stop() (and the destructor) sets the group's cancel
// flag, which ends any wait of the thread — the rendezvous, a store key, a
// pending broadcast (its communicator is aborted) — within about
// kCancelPoll, and joins the thread. Nothing outlives the receiver, so the
// core may be destroyed right after it.
//
// Thread safety: Start/Stop from one thread (the service's main).
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "common/status.h"
#include "services/generator/generator_config.h"
#include "services/generator/generator_core.h"

namespace spar {

class WeightBroadcastReceiver {
 public:
  // Starts the thread. `core` must outlive the receiver. Unimplemented in a
  // build without NCCL; InvalidArgument for a config that is not enabled.
  static Result<std::unique_ptr<WeightBroadcastReceiver>> Start(const GeneratorBroadcastConfig& config,
                                                                GeneratorCore* core);
  ~WeightBroadcastReceiver();
  WeightBroadcastReceiver(const WeightBroadcastReceiver&) = delete;
  WeightBroadcastReceiver& operator=(const WeightBroadcastReceiver&) = delete;

  // Ends the thread's wait or broadcast and joins it (idempotent).
  void Stop();
  // Versions applied so far.
  uint64_t versions_applied() const { return applied_.load(); }
  // False once the thread has ended (stopped, or a join that cannot work).
  bool running() const { return running_.load(); }

 private:
  WeightBroadcastReceiver(const GeneratorBroadcastConfig& config, GeneratorCore* core);
  void Run();

  GeneratorBroadcastConfig config_;
  GeneratorCore* core_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> applied_{0};
  std::atomic<bool> running_{true};
  std::thread thread_;
};

}  // namespace spar
