// spar/common/logging.h — one named spdlog logger per component.
//
// Every component logs through its own logger ("storage", "generator",
// "scorer", "learner", "orchestrator", "bus", "model", ...), so a reader can
// tell at a glance which part of the pipeline spoke. Loggers write to stderr
// with a shared pattern; the level comes from the config file or the
// `--log-level` flag and applies to every logger.
//
// Thread safety: all functions may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "common/status.h"

namespace spar {

// Returns the logger for `component`, creating it on first use.
std::shared_ptr<spdlog::logger> Logger(const std::string& component);

// Sets the level of every logger, now and later. Accepts trace, debug, info,
// warn, error, critical, off. Anything else is InvalidArgument naming the
// allowed values.
Status SetLogLevel(std::string_view level);

// Prefix every line with a process tag, e.g. "generator-1", so the logs of
// several local children interleave readably.
void SetLogProcessTag(const std::string& tag);

}  // namespace spar
