#include "bench/bench.h"

#include <cstdio>

namespace spar::bench {

std::vector<cli::CommandSpec>& BenchRegistry() {
  static std::vector<cli::CommandSpec> registry;
  return registry;
}

std::string FormatRate(double per_second) {
  const char* suffix = "";
  double v = per_second;
  if (v >= 1e9) { v /= 1e9; suffix = " G"; }
  else if (v >= 1e6) { v /= 1e6; suffix = " M"; }
  else if (v >= 1e3) { v /= 1e3; suffix = " k"; }
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.2f%s", v, suffix);
  return buf;
}

}  // namespace spar::bench
