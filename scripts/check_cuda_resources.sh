#!/usr/bin/env bash
# Reads ptxas's --resource-usage report of the cuda kernels (built by the
# cuda_resource_report target) and prints one line per kernel and arch:
# registers, stack frame, spill bytes. Fails when a kernel spills or keeps a
# stack frame (local memory in the inner loop), or uses more than 255 registers.
set -euo pipefail
report=${1:?usage: check_cuda_resources.sh ptxas-report.txt}
awk '
  /Compiling entry function/ {
    name = $0; sub(/.*function ./, "", name); sub(/. for .*/, "", name);
    arch = $0; sub(/.* for ./, "", arch); sub(/.$/, "", arch); next
  }
  /bytes stack frame/ { stack = $1; spill = $5 + $9; next }
  /Used [0-9]+ registers/ {
    regs = $0; sub(/.*Used /, "", regs); sub(/ registers.*/, "", regs);
    short = name; sub(/^_ZN7attnkit[0-9]*[a-z]*6detail/, "", short);
    printf "%-6s regs %3d  stack %4d  spill %4d  %s\n", arch, regs, stack, spill, substr(short, 1, 90);
    kernels++;
    if (stack > 0 || spill > 0 || regs + 0 > 255) bad++;
  }
  END {
    if (kernels == 0) { print "no kernels in the report"; exit 1 }
    printf "%d kernel builds, %d with spills or a stack frame\n", kernels, bad;
    exit bad > 0
  }' "$report"
