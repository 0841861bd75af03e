// A child process for integration tests: started with argv, killed (SIGTERM,
// then SIGKILL) when the handle goes away.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

namespace spar::testing {

class ChildProcess {
 public:
  // Starts argv[0] with argv; stdout/stderr go to `log_path` (appended).
  ChildProcess(const std::vector<std::string>& argv, const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool Running();
  // Sends `signal` and waits up to `timeout` for exit; returns the exit
  // status as from waitpid, or -1 if still running.
  int Stop(int signal, std::chrono::milliseconds timeout);

 private:
  pid_t pid_ = -1;
  int status_ = -1;
};

// Waits until `path` exists and is non-empty; returns its first line, or ""
// on timeout.
std::string WaitForFile(const std::string& path, std::chrono::milliseconds timeout);

}  // namespace spar::testing
