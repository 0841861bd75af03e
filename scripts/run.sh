#!/usr/bin/env bash
# The README's main job: installs what is missing, builds, and runs the
# pipeline on the embedded default config (small models, one machine, no
# GPU). Arguments go to `spar run`, e.g. `scripts/run.sh --config my.yaml`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
cd "$root"
config=examples/local.yaml
args=("$@")
for a in "$@"; do [ "$a" = "--config" ] && config=""; done
if [ -n "$config" ]; then args=(--config "$config" "${args[@]}"); fi
exec "${SPAR_BUILD_DIR:-$root/build}/cli/spar" run "${args[@]}"
