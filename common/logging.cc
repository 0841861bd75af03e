#include "common/logging.h"

#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>

namespace spar {
namespace {

std::mutex g_mutex;
spdlog::level::level_enum g_level = spdlog::level::info;
std::string g_tag = "spar";

std::string Pattern() { return "[%Y-%m-%d %H:%M:%S.%e] [" + g_tag + "] [%n] [%^%l%$] %v"; }

}  // namespace

std::shared_ptr<spdlog::logger> Logger(const std::string& component) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (auto existing = spdlog::get(component)) return existing;
  auto logger = spdlog::stderr_color_mt(component);
  logger->set_level(g_level);
  logger->set_pattern(Pattern());
  return logger;
}

Status SetLogLevel(std::string_view level) {
  static constexpr const char* kAllowed = "trace, debug, info, warn, error, critical, off";
  spdlog::level::level_enum parsed;
  if (level == "trace") parsed = spdlog::level::trace;
  else if (level == "debug") parsed = spdlog::level::debug;
  else if (level == "info") parsed = spdlog::level::info;
  else if (level == "warn" || level == "warning") parsed = spdlog::level::warn;
  else if (level == "error") parsed = spdlog::level::err;
  else if (level == "critical") parsed = spdlog::level::critical;
  else if (level == "off") parsed = spdlog::level::off;
  else
    return InvalidArgument("log level '" + std::string(level) + "' is not one of: " + kAllowed);
  std::lock_guard<std::mutex> lock(g_mutex);
  g_level = parsed;
  spdlog::set_level(parsed);
  spdlog::apply_all([parsed](const std::shared_ptr<spdlog::logger>& l) { l->set_level(parsed); });
  return Status::Ok();
}

void SetLogProcessTag(const std::string& tag) {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_tag = tag;
  std::string pattern = Pattern();
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->set_pattern(pattern); });
}

}  // namespace spar
