#!/usr/bin/env bash
# moe solve's latency on one core (issue 14: cold start under 150 ms, each further answer under
# 20 ms): cold start = a whole `moe solve --ckpt CKPT QUESTION` process (start, load, answer),
# median of RUNS; further answers = `--latency` of 160 questions (ten of each interpolate
# module) answered one at a time by one process, median and p90. Pinned to CPU 0, 1 thread.
#   bench/solve_latency.sh [CKPT] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-models/solver}
RUNS=${2:-15}
DATA=${MATH_DATA:-../shared/data/mathematics_dataset}
T=$(mktemp -d /tmp/moe-lat.XXXXXX)
trap 'rm -rf "$T"' EXIT
Q="Differentiate 3*x**4 - 2*x wrt x."
for i in $(seq "$RUNS"); do
  s=$(date +%s%N)
  taskset -c 0 ./moe solve --ckpt "$CKPT" --threads 1 "$Q" >"$T/a"
  echo $(( ($(date +%s%N) - s) / 1000 ))
done | sort -n >"$T/cold"
for f in "$DATA"/interpolate/*.txt; do awk 'NR % 2 == 1 && NR < 20' "$f"; done >"$T/q"
taskset -c 0 ./moe solve --ckpt "$CKPT" --threads 1 --latency <"$T/q" >/dev/null 2>"$T/lat"
sed 's/ ms.*//' "$T/lat" | sort -n >"$T/warm"
pct() { awk -v p="$2" '{ v[NR] = $1 } END { i = int(NR * p + 0.5); if (i < 1) i = 1; print v[i] }' "$1"; }
echo "moe solve --ckpt $CKPT, one core (taskset -c 0, --threads 1):"
echo "  cold start (process, load, answer to \"$Q\" = $(cat "$T/a")): median $(awk '{ printf "%.1f", $1 / 1000 }' <<<"$(pct "$T/cold" 0.5)") ms over $RUNS runs (min $(awk '{ printf "%.1f", $1 / 1000 }' <<<"$(head -1 "$T/cold")"), max $(awk '{ printf "%.1f", $1 / 1000 }' <<<"$(tail -1 "$T/cold")"))"
echo "  each further answer: median $(pct "$T/warm" 0.5) ms, p90 $(pct "$T/warm" 0.9) ms, max $(tail -1 "$T/warm") ms over $(wc -l <"$T/warm") questions of the sixteen modules"
