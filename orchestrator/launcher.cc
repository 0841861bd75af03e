#include "orchestrator/launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/files.h"
#include "common/logging.h"

namespace spar {

std::string TailOfFile(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return "";
  auto size = static_cast<size_t>(in.tellg());
  size_t start = size > max_bytes ? size - max_bytes : 0;
  in.seekg(static_cast<std::streamoff>(start));
  std::string out(size - start, '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

Status WriteReadyFile(const std::string& path, const std::string& address, const std::string& metrics_address) {
  std::string text = address + "\n";
  if (!metrics_address.empty()) text += "metrics " + metrics_address + "\n";
  return WriteFileAtomic(path, text);
}

std::string Launcher::SelfExecutable() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("spar") : p.string();
}

Launcher::Launcher(std::string spar_binary, std::string log_dir)
    : binary_(std::move(spar_binary)), log_dir_(std::move(log_dir)) {}

Launcher::~Launcher() { StopAll(); }

Result<ChildService> Launcher::Start(const std::string& name, const std::string& subcommand,
                                     const std::vector<std::string>& args,
                                     std::chrono::seconds timeout) {
  SPAR_RETURN_IF_ERROR(EnsureDir(log_dir_));
  ChildService child;
  child.name = name;
  child.log_path = log_dir_ + "/" + name + ".log";
  const std::string ready = log_dir_ + "/" + name + ".ready";
  std::filesystem::remove(ready);
  std::vector<std::string> argv = {binary_, subcommand};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.insert(argv.end(), {"--listen", "127.0.0.1:0", "--ready-file", ready});

  pid_t pid = fork();
  if (pid < 0) return Unavailable("cannot fork to start " + name);
  if (pid == 0) {
    int fd = open(child.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    // Die with the parent, so a killed `spar run` leaves no orphans.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    std::vector<char*> raw;
    for (auto& a : argv) raw.push_back(a.data());
    raw.push_back(nullptr);
    execv(binary_.c_str(), raw.data());
    _exit(127);
  }
  child.pid = pid;
  children_.push_back(child);
  Logger("orchestrator")->info("started {} (pid {}), log {}", name, pid, child.log_path);

  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(ready);
    std::string line;
    if (in && std::getline(in, line) && !line.empty()) {
      children_.back().address = line;
      while (std::getline(in, line))
        if (line.rfind("metrics ", 0) == 0) children_.back().metrics_address = line.substr(8);
      return children_.back();
    }
    if (!Alive(name)) {
      return Unavailable(name + " exited before it was ready; its log ends with:\n" +
                         TailOfFile(child.log_path));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  Stop(name);
  return Unavailable(name + " was not ready within " + std::to_string(timeout.count()) +
                     " s; its log ends with:\n" + TailOfFile(child.log_path));
}

bool Launcher::Alive(const std::string& name) {
  for (auto& c : children_) {
    if (c.name != name || c.pid <= 0) continue;
    int status = 0;
    pid_t r = waitpid(c.pid, &status, WNOHANG);
    if (r == c.pid) {
      c.pid = -1;
      return false;
    }
    return r == 0;
  }
  return false;
}

void Launcher::Stop(const std::string& name, std::chrono::milliseconds grace) {
  StopWhere([&](const ChildService& c) { return c.name == name; }, grace);
}

void Launcher::StopAll() {
  StopWhere([](const ChildService&) { return true; }, std::chrono::seconds(5));
}

void Launcher::StopWhere(const std::function<bool(const ChildService&)>& which, std::chrono::milliseconds grace) {
  // All at once: every chosen child gets SIGTERM now and they share one
  // grace period, so stopping N services costs the slowest one's shutdown,
  // not the sum; whoever is still there after it gets SIGKILL.
  const auto deadline = std::chrono::steady_clock::now() + grace;
  std::vector<ChildService*> stopping;
  for (auto& c : children_)
    if (c.pid > 0 && which(c)) {
      kill(c.pid, SIGTERM);
      stopping.push_back(&c);
    }
  for (bool waiting = true; waiting;) {
    waiting = false;
    for (ChildService* c : stopping) {
      if (c->pid <= 0) continue;
      int status = 0;
      if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
        c->pid = -1;
      } else if (std::chrono::steady_clock::now() >= deadline) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &status, 0);
        c->pid = -1;
      } else {
        waiting = true;
      }
    }
    if (waiting) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

}  // namespace spar
