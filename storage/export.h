// spar/storage/export.h — rollouts with their win rates as JSONL, the
// format SPPO users feed to other tools.
//
// One line per scored prompt group:
//   {"prompt_id", "iteration", "prompt" (text) or "messages" (conversation),
//    "responses": [K texts], "win_rates": [K], "policy_version",
//    "chosen": [...messages, {"role":"assistant","content": best}],
//    "rejected": [... worst], "chosen_probs": P(best > worst),
//    "chosen_probs_win": win rate of best, "chosen_probs_lose": win rate of
//    worst, "scorer": model}
// matching the pair columns of the SPPO scripts (chosen / rejected /
// chosen_probs / chosen_probs_win / chosen_probs_lose). Best and worst are
// the highest and lowest win rate (first index on ties).
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>

#include "common/status.h"
#include "storage/run_store.h"

namespace spar {

struct ExportOptions {
  std::optional<uint32_t> iteration;  // only this iteration
  bool include_unscored = false;      // also groups without scores (no pair fields)
};

struct ExportStats {
  uint64_t groups_written = 0;
  uint64_t groups_unscored = 0;  // skipped (or written without pair fields)
};

Status ExportJsonl(const RunStore& store, const ExportOptions& options, std::ostream& out,
                   ExportStats* stats);

}  // namespace spar
