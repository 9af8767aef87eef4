#!/usr/bin/env bash
# All tests: installs what is missing, builds everything with g++ and -Werror
# and runs ctest, then does the same with clang under AddressSanitizer + UBSan,
# where ctest also runs each libFuzzer target (tests/fuzz) for 60 seconds.
# The g++ build also runs the portability checks (qemu-x86_64 -cpu Haswell and
# Nehalem, the dispatch binary's symbols); sanitized binaries skip qemu.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh

cmake -S . -B build-test -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++ -DATTNKIT_WERROR=ON \
  -DATTNKIT_BUILD_TESTS=ON -DATTNKIT_BUILD_BENCH=ON -DATTNKIT_BUILD_EXAMPLES=ON
cmake --build build-test -j2
ctest --test-dir build-test -j2 --output-on-failure

cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DATTNKIT_WERROR=ON \
  -DATTNKIT_SANITIZE=ON -DATTNKIT_BUILD_FUZZ=ON -DATTNKIT_BUILD_TESTS=ON -DATTNKIT_BUILD_BENCH=ON -DATTNKIT_BUILD_EXAMPLES=ON
cmake --build build-asan -j2
ctest --test-dir build-asan -j2 --output-on-failure
