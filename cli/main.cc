// The one `spar` binary: every service and tool is a subcommand.
#include <algorithm>
#include <cstdio>

#include "cli/command.h"
#include "common/logging.h"

namespace spar::cli {

std::vector<CommandSpec>& CommandRegistry() {
  static std::vector<CommandSpec> registry;
  return registry;
}

namespace {
int g_exit_code = 0;
}

void Exit(int code) { g_exit_code = code; }
int ExitCode() { return g_exit_code; }

int Fail(const std::string& command, const Status& status) {
  std::fprintf(stderr, "spar %s: error: %s\n", command.c_str(), status.ToString().c_str());
  int code = status.code() == StatusCode::kInvalidArgument ? 2 : 1;
  Exit(code);
  return code;
}

}  // namespace spar::cli

int main(int argc, char** argv) {
  CLI::App app{"spar — Self-Play Alignment Runtime: SPPO/GPO against a General Preference Model, "
               "as gRPC services driven over a ZeroMQ bus."};
  app.name("spar");
  app.require_subcommand(1);
  app.fallthrough();
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off")
      ->capture_default_str();
  app.set_version_flag("--version", "spar 0.1.0");

  auto& registry = spar::cli::CommandRegistry();
  std::sort(registry.begin(), registry.end(),
            [](const auto& a, const auto& b) { return a.order < b.order; });
  for (auto& spec : registry) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.description);
    spec.setup(*sub);
  }
  app.parse_complete_callback([&]() {
    spar::Status status = spar::SetLogLevel(log_level);
    if (!status.ok()) throw CLI::ValidationError("--log-level", status.message());
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return spar::cli::ExitCode();
}
