#!/usr/bin/env bash
# check_dispatch_symbols.sh BINARY "OBJECTS" — for a program built with
# attnkit_add_cpu_dispatch (OBJECTS: its object files, ';' or ' ' separated):
#  1. nm: no weak function (inline or template) of attnkit or xsimd is defined
#     in two of the arch objects (AVX2, AVX-512, AVX-512 + BF16), so the linker
#     cannot hand one arch's copy to another. Shared standard-library functions are listed.
#     Weak data (typeinfo, the guard of a static) holds no instructions.
#  2. objdump: in the linked program, AVX-512 instructions appear only in
#     global and weak functions of the AVX-512 paths and VEX (AVX) instructions
#     only in those of the SIMD paths, so baseline code and the AVX2 path
#     run on CPUs without them, whichever copy of a shared symbol the linker
#     kept. (Local functions, such as clang's .omp_outlined., cannot be shared
#     between objects; they are called only from their own object's code.)
set -euo pipefail
binary=$1
objects=$(echo "${*:2}" | tr ';' ' ')
arch_objects=()
for arch in avx2 avx512 avx512bf16; do
  arch_objects+=("$(printf '%s\n' $objects | grep "_attnkit_dispatch_${arch}\.cpp\.o$")")
done

weak() { nm -C --defined-only "$1" | awk '$2 == "W" { $1 = ""; $2 = ""; sub(/^  /, ""); print }' | sort -u; }
for a in 0 1 2; do
  for b in $(seq $((a + 1)) 2); do
    shared=$(comm -12 <(weak "${arch_objects[a]}") <(weak "${arch_objects[b]}"))
    ours=$(grep -E 'attnkit|xsimd' <<<"$shared" || true)
    echo "weak functions in both $(basename "${arch_objects[a]}") and $(basename "${arch_objects[b]}"):" \
      "$(grep -c . <<<"$shared" || true), of attnkit or xsimd: $(grep -c . <<<"$ours" || true)"
    grep -vE 'attnkit|xsimd' <<<"$shared" | sed 's/^/  standard library: /' || true
    if [ -n "$ours" ]; then
      echo "FAILED: attnkit or xsimd symbols defined in two arch objects:"
      echo "$ours" | head -20
      exit 1
    fi
  done
done

avx512_path='dispatch_avx512|xsimd::avx512|dispatch_abi::isa\)[12]'
simd_path="$avx512_path|dispatch_avx2|xsimd::avx2|xsimd::fma3<xsimd::avx2>|dispatch_abi::isa\\)0"
globals=$(mktemp)
trap 'rm -f "$globals"' EXIT
nm -C --defined-only "$binary" | awk '$2 ~ /^[TW]$/ { $1 = ""; $2 = ""; sub(/^  /, ""); print }' >"$globals"
objdump -d -C --no-show-raw-insn "$binary" | awk -v avx512="$avx512_path" -v simd="$simd_path" -v globals="$globals" '
  BEGIN { while ((getline name < globals) > 0) global[name] = 1 }
  /^[0-9a-f]+ <.*>:$/ { fn = substr($0, index($0, "<") + 1); sub(/>:$/, "", fn); next }
  /^ +[0-9a-f]+:\t/ && (fn in global) {
    insn = $0; sub(/^ +[0-9a-f]+:\t/, "", insn)
    if (insn ~ /zmm|%k[1-7]/ && fn !~ avx512) { bad[fn] = "AVX-512: " insn }
    else if ((insn ~ /^v[a-z]/ || insn ~ /ymm/) && fn !~ simd) { bad[fn] = "AVX: " insn }
    if (insn ~ /zmm/) z++
    if (insn ~ /ymm/) y++
  }
  END {
    n = 0
    for (f in bad) { if (n < 20) print "FAILED: " f " has " bad[f]; n++ }
    printf "instructions on zmm: %d, on ymm: %d; functions outside their arch path: %d\n", z, y, n
    if (z == 0 || y == 0) { print "FAILED: no AVX-512 or no AVX2 code found: is this a dispatch binary?"; exit 1 }
    exit n > 0
  }'
