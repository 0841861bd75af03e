// spar/common/policy_version.h — how a policy's weights are named in
// messages and logs: "3", or "3 revision 2" for the learner's second
// intermediate publication within version 3 (learner.publish_every_steps).
#pragma once

#include <cstdint>
#include <string>

namespace spar {

inline std::string PolicyVersionName(uint64_t version, uint64_t revision) {
  return std::to_string(version) + (revision ? " revision " + std::to_string(revision) : std::string());
}

}  // namespace spar
