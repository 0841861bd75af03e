// spar/cli/command.h — how a subcommand plugs into the one `spar` binary.
//
// Each subcommand lives in its own cli/cmd_<name>.cc and registers itself
// with SPAR_REGISTER_COMMAND. Its setup function declares its flags on the
// CLI11 sub-app and sets a callback; the callback returns the process exit
// code through `Exit(code)`. Files in cli/ are compiled straight into the
// binary (not a static library), so static registration is never dropped by
// the linker.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/status.h"

namespace spar::cli {

struct CommandSpec {
  std::string name;
  std::string description;
  int order;  // position in `spar --help`
  std::function<void(CLI::App& sub)> setup;
};

std::vector<CommandSpec>& CommandRegistry();

struct CommandRegistrar {
  explicit CommandRegistrar(CommandSpec spec) { CommandRegistry().push_back(std::move(spec)); }
};

// Sets the exit code the binary returns after the callback finishes.
void Exit(int code);
int ExitCode();

// Prints "spar <command>: error: <status>" to stderr and sets exit code 1
// (2 for invalid arguments), returning the code.
int Fail(const std::string& command, const Status& status);

}  // namespace spar::cli

#define SPAR_CLI_CONCAT_INNER_(a, b) a##b
#define SPAR_CLI_CONCAT_(a, b) SPAR_CLI_CONCAT_INNER_(a, b)
#define SPAR_REGISTER_COMMAND(name, description, order, setup_fn) \
  static ::spar::cli::CommandRegistrar SPAR_CLI_CONCAT_(spar_command_, __LINE__)( \
      ::spar::cli::CommandSpec{name, description, order, setup_fn})
