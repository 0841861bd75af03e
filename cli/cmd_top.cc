// `spar top`: a live terminal view of a run from the ZeroMQ bus.
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include <nlohmann/json.hpp>

#include "bus/bus.h"
#include "cli/command.h"
#include "common/files.h"
#include "orchestrator/top_view.h"

namespace spar::cli {
namespace {

std::atomic<bool> g_stop{false};

struct TopArgs {
  std::string bus;
  std::string run_dir;
  bool once = false;
  double interval = 1.0;
  double down_after = 5.0;
  double wait = 3.0;
  int width = 0;
  bool no_color = false;
};

int64_t NowMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int TerminalWidth() {
  winsize ws{};
  if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  if (const char* columns = std::getenv("COLUMNS")) {
    const int c = std::atoi(columns);
    if (c > 0) return c;
  }
  return 100;
}

// The broker's subscribe address from RUN_DIR/bus.json, which `spar run`
// writes when it starts the broker.
Result<std::string> SubscribeAddressOf(const std::string& run_dir) {
  const std::string path = run_dir + "/bus.json";
  SPAR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return DataLoss("'" + path + "' is not a JSON object");
  auto it = j.find("subscribe");
  if (it == j.end() || !it->is_string() || it->get<std::string>().empty())
    return DataLoss("'" + path + "' has no \"subscribe\" address");
  return it->get<std::string>();
}

// The services `spar run` listed in RUN_DIR/services.json with their bus
// source names, so that one already dead shows as down. Absent file: none.
Status ExpectServicesOf(const std::string& run_dir, TopView& view) {
  const std::string path = run_dir + "/services.json";
  if (!std::filesystem::exists(path)) return Status::Ok();
  SPAR_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("services") || !j["services"].is_array())
    return DataLoss("'" + path + "' is not {\"services\": [...]}");
  for (const auto& s : j["services"]) {
    if (!s.is_object()) return DataLoss("'" + path + "': a services entry is not an object");
    const std::string source = s.value("source", std::string());
    const std::string service = s.value("service", std::string());
    if (!source.empty()) view.Expect(source, service);
  }
  return Status::Ok();
}

// Feeds every message that arrives before `until` into the view.
Status Pump(BusSubscriber& sub, TopView& view, std::chrono::steady_clock::time_point until) {
  while (!g_stop) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return Status::Ok();
    auto m = sub.Receive(std::min(left, std::chrono::milliseconds(200)));
    if (!m.ok()) {
      if (m.status().code() == StatusCode::kDataLoss) continue;  // one bad message; the next goes on
      return m.status();
    }
    if (m->has_value()) view.Observe(**m, NowMicros());
  }
  return Status::Ok();
}

int RunTop(const TopArgs& args) {
  std::string address = args.bus;
  if (address.empty()) {
    if (args.run_dir.empty()) return Fail("top", InvalidArgument("give --bus ADDRESS or --run RUN_DIR"));
    auto found = SubscribeAddressOf(args.run_dir);
    if (!found.ok()) return Fail("top", found.status());
    address = *found;
  }
  if (args.interval <= 0) return Fail("top", InvalidArgument("--interval must be > 0"));
  auto sub = BusSubscriber::Connect(address, {"metrics.", "lifecycle."});
  if (!sub.ok()) return Fail("top", sub.status());

  TopViewOptions options;
  options.down_after = std::chrono::milliseconds(static_cast<int64_t>(args.down_after * 1000));
  options.width = args.width > 0 ? args.width : TerminalWidth();
  options.color = !args.no_color && !args.once && isatty(STDOUT_FILENO);
  TopView view(options);
  if (!args.run_dir.empty()) {
    Status s = ExpectServicesOf(args.run_dir, view);
    if (!s.ok()) return Fail("top", s);
  }

  if (args.once) {
    // Rates need two snapshots of a source, so keep listening a little
    // after the first message (services publish every second).
    const auto start = std::chrono::steady_clock::now();
    const auto limit = start + std::chrono::milliseconds(static_cast<int64_t>(args.wait * 1000));
    Status s = Pump(**sub, view, std::min(limit, start + std::chrono::milliseconds(500)));
    while (s.ok() && std::chrono::steady_clock::now() < limit && view.heard_count() == 0)
      s = Pump(**sub, view, std::min(limit, std::chrono::steady_clock::now() + std::chrono::milliseconds(200)));
    if (s.ok() && view.heard_count() > 0)
      s = Pump(**sub, view, std::min(limit, std::chrono::steady_clock::now() + std::chrono::milliseconds(2200)));
    if (!s.ok()) return Fail("top", s);
    if (view.heard_count() == 0) {
      std::cout << "no services seen on " << address << "\n";
      return 1;
    }
    std::cout << view.Render(NowMicros()) << std::flush;
    return 0;
  }

  std::signal(SIGINT, [](int) { g_stop = true; });
  std::signal(SIGTERM, [](int) { g_stop = true; });
  const auto interval = std::chrono::milliseconds(static_cast<int64_t>(args.interval * 1000));
  if (isatty(STDOUT_FILENO)) std::cout << "\x1b[2J";
  while (!g_stop) {
    Status s = Pump(**sub, view, std::chrono::steady_clock::now() + interval);
    if (!s.ok()) return Fail("top", s);
    if (args.width <= 0) view.set_width(TerminalWidth());  // follow terminal resizes
    std::string frame = view.heard_count() == 0 ? "spar top  waiting for services on " + address + " ...\n"
                                                 : view.Render(NowMicros());
    // Home, draw, clear what the last frame left below.
    std::cout << "\x1b[H" << frame << "\x1b[J" << std::flush;
  }
  std::cout << "\n";
  return 0;
}

void Setup(CLI::App& sub) {
  auto args = std::make_shared<TopArgs>();
  sub.add_option("--bus", args->bus, "the bus broker's subscribe address (tcp://HOST:PORT)");
  sub.add_option("--run", args->run_dir, "run folder: read the broker's address from RUN_DIR/bus.json");
  sub.add_flag("--once", args->once, "print one frame and exit (1 if no service is heard)");
  sub.add_option("--interval", args->interval, "seconds between frames")->check(CLI::PositiveNumber);
  sub.add_option("--down-after", args->down_after, "seconds of silence before a service shows as down")
      ->check(CLI::PositiveNumber);
  sub.add_option("--wait", args->wait, "with --once: seconds to listen at most")->check(CLI::PositiveNumber);
  sub.add_option("--width", args->width, "columns (default: the terminal's)")->check(CLI::PositiveNumber);
  sub.add_flag("--no-color", args->no_color, "plain text, no ANSI colors");
  sub.callback([args]() { Exit(RunTop(*args)); });
}

}  // namespace

SPAR_REGISTER_COMMAND("top", "Live view of a run's services from the bus (rates, occupancy, progress)", 82, Setup);

}  // namespace spar::cli
