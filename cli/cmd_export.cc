// `spar export --db DIR --out FILE.jsonl`: scored rollout groups as JSONL.
#include <fstream>
#include <iostream>

#include "cli/command.h"
#include "common/files.h"
#include "storage/export.h"

namespace spar::cli {
namespace {

struct ExportArgs {
  std::string db;
  std::string out;
  int64_t iteration = -1;
  bool include_unscored = false;
};

int RunExport(const ExportArgs& args) {
  RunStoreOptions options;
  options.create_if_missing = false;
  options.read_only = true;  // works while a run holds the lock
  auto store = RunStore::Open(args.db, options);
  if (!store.ok()) return Fail("export", store.status());
  ExportOptions export_options;
  if (args.iteration >= 0) export_options.iteration = static_cast<uint32_t>(args.iteration);
  export_options.include_unscored = args.include_unscored;
  ExportStats stats;
  Status s;
  if (args.out == "-") {
    s = ExportJsonl(**store, export_options, std::cout, &stats);
  } else {
    // Write beside the target and rename, so a failed export leaves no
    // half file under the final name.
    std::string tmp = args.out + ".partial";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      if (!out) return Fail("export", Unavailable("cannot write '" + tmp + "'"));
      s = ExportJsonl(**store, export_options, out, &stats);
      out.flush();
      if (s.ok() && !out) s = Unavailable("writing '" + tmp + "' failed");
    }
    if (s.ok() && std::rename(tmp.c_str(), args.out.c_str()) != 0)
      s = Unavailable("cannot rename '" + tmp + "' to '" + args.out + "'");
    if (!s.ok()) std::remove(tmp.c_str());
  }
  if (!s.ok()) return Fail("export", s);
  std::cerr << "spar export: " << stats.groups_written << " groups written";
  if (stats.groups_unscored)
    std::cerr << " (" << stats.groups_unscored << " unscored "
              << (args.include_unscored ? "included without pairs" : "skipped") << ")";
  std::cerr << " to " << args.out << "\n";
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<ExportArgs>();
  sub.add_option("--db", args->db, "run store folder (RUN_DIR/db)")->required();
  sub.add_option("--out", args->out, "output JSONL file, or - for stdout")->required();
  sub.add_option("--iteration", args->iteration, "only this iteration")->check(CLI::NonNegativeNumber);
  sub.add_flag("--include-unscored", args->include_unscored,
               "also write groups that have no scores yet (without chosen/rejected)");
  sub.callback([args]() { Exit(RunExport(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("export", "Export rollouts with win rates and chosen/rejected pairs as JSONL",
                      70, Setup);

}  // namespace spar::cli
