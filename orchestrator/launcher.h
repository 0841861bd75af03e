// spar/orchestrator/launcher.h — starts spar services as child processes
// on loopback for the one-machine mode of `spar run`.
//
// A child is `spar <service> --config FILE --listen 127.0.0.1:0
// --ready-file F`; it writes its bound address to F once it serves (first
// line), and when it serves Prometheus text a second line
// `metrics HOST:PORT` (see WriteReadyFile). The
// launcher waits for that (or for the child to die, with the tail of its log
// in the error), and stops children on destruction (SIGTERM, then SIGKILL).
//
// Thread safety: one thread uses a Launcher.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace spar {

struct ChildService {
  std::string name;      // "scorer", "generator-0", ...
  pid_t pid = -1;
  std::string address;   // host:port it serves on
  std::string metrics_address;  // host:port of its /metrics, "" when it serves none
  std::string log_path;
};

// What a service writes to its --ready-file once it serves: its gRPC
// address, then `metrics <host:port>` when it serves /metrics. Written
// atomically (a reader never sees half of it).
Status WriteReadyFile(const std::string& path, const std::string& address,
                      const std::string& metrics_address);

class Launcher {
 public:
  // `spar_binary` is the path of the spar executable (usually /proc/self/exe
  // resolved); `log_dir` receives one log file per child.
  Launcher(std::string spar_binary, std::string log_dir);
  ~Launcher();
  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  // Starts `spar <subcommand> <args...> --listen 127.0.0.1:0 --ready-file ..`
  // and waits until it serves. Unavailable (with the log tail) if it exits
  // or does not become ready within `timeout`.
  Result<ChildService> Start(const std::string& name, const std::string& subcommand,
                             const std::vector<std::string>& args,
                             std::chrono::seconds timeout = std::chrono::seconds(120));

  // True while the child runs.
  bool Alive(const std::string& name);
  // Stops one child (SIGTERM, then SIGKILL after `grace`).
  void Stop(const std::string& name, std::chrono::milliseconds grace = std::chrono::seconds(10));
  void StopAll();

  // The path of the running spar executable.
  static std::string SelfExecutable();

 private:
  // SIGTERM to every live child `which` picks, one shared `grace`, then SIGKILL.
  void StopWhere(const std::function<bool(const ChildService&)>& which, std::chrono::milliseconds grace);

  std::string binary_;
  std::string log_dir_;
  std::vector<ChildService> children_;
};

// The last `max_bytes` of a file (for error messages about children).
std::string TailOfFile(const std::string& path, size_t max_bytes = 2000);

}  // namespace spar
