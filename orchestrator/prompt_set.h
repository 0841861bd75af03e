// spar/orchestrator/prompt_set.h — the prompt set of a run: a JSONL file
// split deterministically into one shard per iteration.
//
// Each line is an object with either "prompt" (text) or "messages" (a list
// of {"role", "content"} with roles system/user/assistant), and optionally
// "prompt_id" (else "id", else one is derived from the line's content). As
// in the SPPO seed, the set is cut into `shards` contiguous parts of
// near-equal size, in file order, so the same file always gives the same
// shards. Blank lines are skipped.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "storage/records.h"

namespace spar {

struct PromptSet {
  std::vector<PromptRecord> prompts;  // iteration/prompt_index unset

  // Errors: NotFound (no file); InvalidArgument naming the line number and
  // what is wrong (not JSON, neither prompt nor messages, empty text, bad
  // role, duplicate prompt_id).
  static Result<PromptSet> Load(const std::string& path, int64_t limit = 0);
  static Result<PromptSet> Parse(const std::string& jsonl, const std::string& name,
                                 int64_t limit = 0);

  // Shard `index` of `count`, with iteration = index and prompt_index set to
  // the position inside the shard.
  std::vector<PromptRecord> Shard(uint32_t index, uint32_t count) const;
};

}  // namespace spar
