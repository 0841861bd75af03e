// `spar scorer --config FILE`: serves the PreferenceScorer gRPC service.
#include <csignal>
#include <thread>

#include "cli/command.h"
#include "common/files.h"
#include "common/logging.h"
#include "services/common/server.h"
#include "services/scorer/scorer_config.h"
#include "services/scorer/scorer_service.h"

namespace spar::cli {
namespace {

struct ScorerArgs {
  std::string config;
  std::string listen;
  std::string ready_file;
};

std::atomic<bool> g_stop{false};

int RunScorer(const ScorerArgs& args) {
  std::string log_level = "info";
  auto config = LoadScorerConfig(args.config, &log_level);
  if (!config.ok()) return Fail("scorer", config.status());
  SetLogLevel(log_level).IgnoreError();  // validated by the config reader
  if (!args.listen.empty()) config->listen = args.listen;
  SetLogProcessTag("scorer");
  auto log = Logger("scorer");
  auto model = CreatePreferenceModel(*config);
  if (!model.ok()) return Fail("scorer", model.status());
  auto core = ScorerCore::Create(std::move(*model), config->limits);
  if (!core.ok()) return Fail("scorer", core.status());
  ScorerService service(core->get());
  GrpcServerOptions options;
  options.address = config->listen;
  auto server = StartGrpcServer(options, {&service});
  if (!server.ok()) return Fail("scorer", server.status());
  const auto& d = (*core)->description();
  log->info("serving PreferenceScorer on {} (kind {}, model {}, tau {}, {})", server->address,
            d.kind, d.model_name, d.tau, ConventionName(d.convention));
  if (!args.ready_file.empty()) {
    Status s = WriteFileAtomic(args.ready_file, server->address + "\n");
    if (!s.ok()) return Fail("scorer", s);
  }
  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  log->info("shutting down");
  server->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<ScorerArgs>();
  sub.add_option("--config", args->config, "spar YAML config (its scorer: section)")->required();
  sub.add_option("--listen", args->listen, "override scorer.listen (host:port, port 0 = any)");
  sub.add_option("--ready-file", args->ready_file,
                 "write the bound host:port to this file once serving (for launchers)");
  sub.callback([args]() { Exit(RunScorer(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("scorer", "Serve the PreferenceScorer gRPC service (GPM, Bradley-Terry, rule)",
                      20, Setup);

}  // namespace spar::cli
