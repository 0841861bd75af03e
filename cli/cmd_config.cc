// `spar config check --config FILE`: validates a run config and prints it.
#include <iostream>

#include "cli/command.h"
#include "orchestrator/run_config.h"

namespace spar::cli {
namespace {

void Setup(CLI::App& sub) {
  sub.require_subcommand(1);
  CLI::App* check = sub.add_subcommand("check", "Validate a config file; print the values it sets");
  auto path = std::make_shared<std::string>();
  check->add_option("--config", *path, "YAML config file")->required();
  check->callback([path]() {
    auto config = RunConfig::Load(*path);
    if (!config.ok()) {
      Exit(Fail("config check", config.status()));
      return;
    }
    const RunConfig& c = *config;
    std::cout << *path << ": OK\n"
              << "  run: dir=" << c.run.dir << " iterations=" << c.run.iterations
              << " seed=" << c.run.seed << " algorithm=" << c.run.algorithm << "\n"
              << "  prompts: " << c.prompts.path << (c.prompts.limit ? " (limit " + std::to_string(c.prompts.limit) + ")" : "") << "\n"
              << "  policy: " << c.policy.model
              << (c.policy.init.enabled ? " (built if absent: " + c.policy.init.arch + "/" + c.policy.init.preset + ")" : "") << "\n"
              << "  generation: K=" << c.generation.samples_per_prompt
              << " temperature=" << c.generation.temperature << " top_p=" << c.generation.top_p
              << " top_k=" << c.generation.top_k << " max_new_tokens=" << c.generation.max_new_tokens
              << "\n";
    Exit(0);
  });
}

}  // namespace

SPAR_REGISTER_COMMAND("config", "Check a configuration file", 80, Setup);

}  // namespace spar::cli
