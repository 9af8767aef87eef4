#!/usr/bin/env bash
# Eviction and selection quality on stories260K: builds attnkit_llama2, runs
# its evaluation and writes docs/llama2_eval.md (the tables),
# docs/llama2_eval.csv and docs/llama2_eval.png (perplexity ratio vs budget per
# policy, drawn with gnuplot, which this script installs when missing).
#   scripts/llama2_eval.sh [--model PATH] [--tokenizer PATH]
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install_deps.sh
if ! command -v gnuplot >/dev/null; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends gnuplot-nox
fi
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release \
  -DATTNKIT_BUILD_TESTS=OFF -DATTNKIT_BUILD_EXAMPLES=ON -DATTNKIT_BUILD_BENCH=OFF
cmake --build build-release -j2 --target attnkit_llama2

mkdir -p docs
./build-release/examples/attnkit_llama2 --eval --csv docs/llama2_eval.csv "$@" > docs/llama2_eval.md

# One data file per policy (budget, ppl ratio, mean KV rows), so each gets its own line.
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
awk -F, 'NR > 1 && $2 > 0 && $8 == "f32" { print $2, $3, $6 > "'"$data"'/" $1 ".dat" }' docs/llama2_eval.csv
policies=$(awk -F, 'NR > 1 && $2 > 0 && $8 == "f32" && !seen[$1]++ { printf "%s ", $1 }' docs/llama2_eval.csv)
gnuplot <<GNUPLOT
set terminal pngcairo size 1200,520 noenhanced font ",10"
set output "docs/llama2_eval.png"
set linetype 9 lc rgb "#a0522d" pt 7 dt 2
set linetype 10 lc rgb "#ff1493" pt 5 dt 2
set linetype cycle 10
set multiplot layout 1,2 title "stories260K: perplexity under KV eviction and under HiP / Quest selection, relative to the full cache (a2sf-1 coincides with h2o)"
set ylabel "perplexity ratio"
set logscale x 2
set grid
set key top right
set xlabel "budget (rows per layer and KV head: held by eviction, attended by hip and quest)"
set xrange [28:300]
set xtics (32, 64, 128, 256)
plot for [p in "$policies"] "$data/".p.".dat" using 1:2 with linespoints lw 2 title p, \\
     1 with lines dt 2 lc rgb "black" title "full cache"
set xlabel "KV rows actually held, mean over steps, layers and heads"
set xrange [28:340]
set xtics (32, 64, 128, 256)
plot for [p in "$policies"] "$data/".p.".dat" using 3:2 with linespoints lw 2 title p, \\
     1 with lines dt 2 lc rgb "black" title "full cache"
unset multiplot
GNUPLOT
echo "wrote docs/llama2_eval.md, docs/llama2_eval.csv, docs/llama2_eval.png"
