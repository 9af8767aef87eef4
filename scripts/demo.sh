#!/usr/bin/env bash
# The benchmark tour: installs what is missing, builds Release, runs attnkit_tour.
# Arguments go to the tour (--filter SUBSTRING, --json FILE, --quick).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release \
  -DATTNKIT_BUILD_TESTS=OFF -DATTNKIT_BUILD_EXAMPLES=OFF -DATTNKIT_BUILD_BENCH=ON
cmake --build build-release -j2 --target attnkit_tour
./build-release/bench/attnkit_tour "$@"
