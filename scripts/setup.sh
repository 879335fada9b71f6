#!/usr/bin/env bash
# Installs every Debian package that narcache's build, tests and benchmarks need.
# Idempotent and quick when everything is present: it asks dpkg first and only runs apt-get
# (with one `apt-get update`) for what is missing. Needs root (or sudo) only when installing.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev clang-format
  # libraries
  libarchive-dev liblmdb-dev libsodium-dev libboost-graph-dev libcpp-httplib-dev libzstd-dev
  libssl-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libexpected-dev
  libgtest-dev libgmock-dev
  # test judge and tools used by tests and benchmarks
  nix-bin curl python3 xz-utils zstd bzip2 gzip lzip
)
if [[ "${NARCACHE_SETUP_BENCH:-0}" == 1 ]]; then
  packages+=(nginx wrk hyperfine time)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

SUDO=""
if [[ $(id -u) != 0 ]]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
