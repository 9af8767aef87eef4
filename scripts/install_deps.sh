#!/usr/bin/env bash
# Installs the Debian packages attnkit's tests, benchmarks and examples build
# with, when any is missing. As root it runs apt-get itself; otherwise through
# sudo; with neither it names the packages and stops.
set -euo pipefail

packages=(cmake make g++ libeigen3-dev libxsimd-dev libgtest-dev libgmock-dev libbenchmark-dev
          clang libclang-rt-dev libomp-dev qemu-user libopenmpi-dev openmpi-bin)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
((${#missing[@]})) || exit 0

if [ "$(id -u)" -eq 0 ]; then
  run=()
elif command -v sudo >/dev/null 2>&1; then
  run=(sudo)
else
  echo "install_deps.sh: missing Debian packages: ${missing[*]}" >&2
  echo "install_deps.sh: run this script as root, or install them yourself: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing: ${missing[*]}"
"${run[@]}" apt-get update
DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
