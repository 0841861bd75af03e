// `spar report RUN_DIR [--out FILE]`: a self-contained HTML report of a run.
#include <iostream>

#include "cli/command.h"
#include "orchestrator/report.h"

namespace spar::cli {
namespace {

struct ReportArgs {
  std::string run_dir;
  std::string out;
};

int RunReport(const ReportArgs& args) {
  auto result = WriteRunReport({args.run_dir, args.out});
  if (!result.ok()) return Fail("report", result.status());
  for (const auto& note : result->notes) std::cerr << "spar report: note: " << note << "\n";
  std::cerr << "spar report: " << result->iterations << " iterations, " << result->metrics_points
            << " metrics points\n";
  std::cout << result->path << "\n";
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<ReportArgs>();
  sub.add_option("run_dir", args->run_dir, "run folder (with summary.json and store/)")->required();
  sub.add_option("--out", args->out, "HTML file to write (default RUN_DIR/report.html)");
  sub.callback([args]() { Exit(RunReport(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("report", "Write a self-contained HTML report of a run (throughput, win rate, loss, sync)",
                      84, Setup);

}  // namespace spar::cli
