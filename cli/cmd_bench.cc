// `spar bench <part>`: runs one of the registered benchmarks.
#include <algorithm>

#include "bench/bench.h"

namespace spar::cli {
namespace {

void SetupBench(CLI::App& sub) {
  sub.require_subcommand(1);
  auto& registry = bench::BenchRegistry();
  std::sort(registry.begin(), registry.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (auto& spec : registry) {
    CLI::App* part = sub.add_subcommand(spec.name, spec.description);
    spec.setup(*part);
  }
}

}  // namespace

SPAR_REGISTER_COMMAND("bench", "Run a benchmark and print its figures (storage, tokenizer, generate, ...)",
                      90, SetupBench);

}  // namespace spar::cli
