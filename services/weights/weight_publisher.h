// spar/services/weights/weight_publisher.h — sends one policy version down
// a chain of generators over gRPC (Generator.UpdateWeights).
//
// The learner sends each byte once, to the first generator; the header's
// relay_to names the rest of the chain, and each generator forwards the
// stream to the next while it receives it. Buckets are hundreds of MB,
// never one RPC per tensor, and the sender copies none of them: each bucket
// goes to gRPC as its few bytes of framing plus slices pointing into the
// tensors (WeightStreamWriter::SerializeBucket), so the kernel's copy into
// the socket is the only one. The call returns only once gRPC has let go of
// every such slice, so the tensors may be freed or changed afterwards.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "services/weights/weight_stream.h"
#include "spar/v1/common.pb.h"

namespace spar {

// The full name of Generator.UpdateWeights, for raw-bytes callers (the
// publisher, the generators' relays).
inline constexpr char kUpdateWeightsMethod[] = "/spar.v1.Generator/UpdateWeights";

struct PublishResult {
  v1::WeightUpdateResult result;  // the first generator's, with the chain's inside
  double seconds = 0;
  uint64_t bytes = 0;
  double gigabytes_per_second() const { return seconds > 0 ? bytes / seconds / 1e9 : 0; }
};

// Streams `writer`'s version (and revision) to chain[0], relaying to
// chain[1:]. The writer's tensors must stay valid and unchanged until it
// returns. Errors: Unavailable naming the generator, or the first
// generator's refusal; a result whose chain reports a failed node is an
// Aborted error naming it.
Result<PublishResult> PublishWeights(WeightStreamWriter& writer, const std::vector<std::string>& chain,
                                     std::chrono::milliseconds timeout);

// The (version, revision) the generator at `address` serves (Generator.Info).
Result<std::pair<uint64_t, uint64_t>> ServingVersion(const std::string& address, std::chrono::milliseconds timeout);

// OK if `result` and every downstream result serve (version, revision).
Status CheckChainApplied(const v1::WeightUpdateResult& result, uint64_t version, uint64_t revision = 0);

}  // namespace spar
