#!/usr/bin/env bash
# Configures and builds spar into build/ (Ninja, RelWithDebInfo). Incremental:
# a second run only rebuilds what changed. Extra arguments go to CMake, e.g.
#   scripts/build.sh -DSPAR_WITH_CUDA=ON -DCMAKE_PREFIX_PATH=/path/to/libtorch
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build="${SPAR_BUILD_DIR:-$root/build}"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
if [ ! -f "$build/CMakeCache.txt" ] || [ $# -gt 0 ]; then
  cmake -S "$root" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
fi
jobs=${SPAR_BUILD_JOBS:-$(nproc)}
cmake --build "$build" -j "$jobs"
