// spar/services/weights/weight_publisher.h — sends one policy version down
// a chain of generators over gRPC (Generator.UpdateWeights).
//
// The learner sends each byte once, to the first generator; the header's
// relay_to names the rest of the chain, and each generator forwards the
// stream to the next while it receives it. Buckets are filled one at a time
// (one bucket of memory in flight per hop, hundreds of MB), never one RPC
// per tensor.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/status.h"
#include "services/weights/weight_stream.h"
#include "spar/v1/common.pb.h"

namespace spar {

struct PublishResult {
  v1::WeightUpdateResult result;  // the first generator's, with the chain's inside
  double seconds = 0;
  uint64_t bytes = 0;
  double gigabytes_per_second() const { return seconds > 0 ? bytes / seconds / 1e9 : 0; }
};

// Streams `writer`'s version to chain[0], relaying to chain[1:]. Errors:
// Unavailable naming the generator, or the first generator's refusal; a
// result whose chain reports a failed node is an Aborted error naming it.
Result<PublishResult> PublishWeights(WeightStreamWriter& writer, const std::vector<std::string>& chain,
                                     std::chrono::milliseconds timeout);

// True if `result` and every downstream result applied `version`.
Status CheckChainApplied(const v1::WeightUpdateResult& result, uint64_t version);

}  // namespace spar
