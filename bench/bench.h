// spar/bench/bench.h — benchmarks behind `spar bench <part>`.
//
// Each benchmark lives in bench/<part>_bench.cc and registers itself with
// SPAR_REGISTER_BENCH; it declares its own flags on the CLI11 sub-app and
// prints its figures (human lines, then one JSON line prefixed "RESULT ")
// so scripts can collect them. Benchmarks print; they never assert speed.
// spar_bench is an OBJECT library linked into the `spar` binary, so the
// static registration is kept.
#pragma once

#include <string>

#include "cli/command.h"

namespace spar::bench {

std::vector<cli::CommandSpec>& BenchRegistry();

struct BenchRegistrar {
  explicit BenchRegistrar(cli::CommandSpec spec) { BenchRegistry().push_back(std::move(spec)); }
};

// Formats a rate with SI suffix: 1234567 -> "1.23 M".
std::string FormatRate(double per_second);

}  // namespace spar::bench

#define SPAR_REGISTER_BENCH(name, description, setup_fn)                          \
  static ::spar::bench::BenchRegistrar SPAR_CLI_CONCAT_(spar_bench_, __LINE__)(   \
      ::spar::cli::CommandSpec{name, description, 0, setup_fn})
