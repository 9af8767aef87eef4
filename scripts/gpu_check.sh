#!/usr/bin/env bash
# The one prepared GPU check of the cuda backend, in two halves so that a GPU
# machine without GoogleTest or Google Benchmark can run it:
#   scripts/gpu_check.sh build   (any machine with nvcc and the test deps)
#       builds test_flash_cuda, attnkit_bench_cuda and the ptxas report for
#       sm_80 and sm_90 into build-gpu/carry/ (binaries, libbenchmark, report);
#   scripts/gpu_check.sh run     (the GPU machine, with build-gpu/carry/)
#       runs the static check, the tests, compute-sanitizer memcheck and
#       racecheck on one small case of each kernel, and the benchmark, then
#       prints one table. Under 8 minutes on one H100/H200.
#   scripts/gpu_check.sh         both, on one machine.
# Logs go to build-gpu/carry/logs/ (or $OUT when set).
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
carry=build-gpu/carry

if [[ $mode == build || $mode == all ]]; then
  set -e
  cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DATTNKIT_ENABLE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="80;90" \
    -DATTNKIT_BUILD_TESTS=ON -DATTNKIT_BUILD_BENCH=ON -DATTNKIT_BUILD_EXAMPLES=OFF > /dev/null
  cmake --build build-gpu -j"$(nproc)" --target test_flash_cuda attnkit_bench_cuda cuda_resource_report
  rm -rf "$carry" && mkdir -p "$carry/lib"
  cp build-gpu/tests/test_flash_cuda build-gpu/bench/attnkit_bench_cuda build-gpu/tests/cuda_resources.txt "$carry/"
  # libbenchmark and this libstdc++ travel along: the GPU machine may have neither.
  for lib in libbenchmark libstdc++; do
    cp -L "$(ldd "$carry/attnkit_bench_cuda" | awk -v l="$lib" 'index($1, l) == 1 {print $3}')" "$carry/lib/"
  done
  set +e
fi
[[ $mode == build ]] && exit 0

logs=${OUT:-$carry/logs}
mkdir -p "$logs"
export LD_LIBRARY_PATH="$PWD/$carry/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
if ! nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader | tee "$logs/gpu.txt"; then
  echo "gpu_check: no GPU here (nvidia-smi failed); run the 'run' half on the GPU machine" >&2
  exit 2
fi
status=0
step() {  # step NAME COMMAND...: runs it, logs it, records pass/fail
  local name=$1
  shift
  local t0=$SECONDS
  if "$@" > "$logs/$name.log" 2>&1; then r=pass; else r=FAIL; status=1; fi
  printf '%-28s %-5s %4ds\n' "$name" "$r" $((SECONDS - t0)) >> "$logs/summary.txt"
}
: > "$logs/summary.txt"
step static_no_spills bash scripts/check_cuda_resources.sh "$carry/cuda_resources.txt"
step tests "$carry/test_flash_cuda"
step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 "$carry/test_flash_cuda" \
  --gtest_filter=FlashCuda.SmallCaseOfEachKernel
step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 "$carry/test_flash_cuda" \
  --gtest_filter=FlashCuda.SmallCaseOfEachKernel
step bench "$carry/attnkit_bench_cuda" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  --benchmark_counters_tabular=true

echo
cat "$logs/summary.txt"
echo
grep -E "^(device|cublas|d2d)|median" "$logs/bench.log" || true
grep -E "FAILED|Failure|ERROR SUMMARY|RACECHECK SUMMARY" "$logs"/*.log | head -40 || true
exit $status
