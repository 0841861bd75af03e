#!/usr/bin/env bash
# The README's test command: installs what is missing (scripts/setup.sh),
# builds, and runs the whole test suite with CTest. Arguments go to ctest,
# e.g. `scripts/test.sh -L unit` or `scripts/test.sh -R RunStore`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$root"
ctest --test-dir "${SPAR_BUILD_DIR:-$root/build}" --output-on-failure -j "$(nproc)" "$@"
