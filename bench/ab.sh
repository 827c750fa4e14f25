#!/usr/bin/env bash
# Paired speed of two builds: `moe bench` of each in turn, ROUNDS times, on one config;
# prints each run's tokens/s, the medians' ratio B / A and the median of the rounds' B / A (the
# machine's drift hits both of a round alike).
#   bench/ab.sh OLD_BINARY NEW_BINARY [CONFIG] [ROUNDS]     (extra flags in BENCH_FLAGS)
set -euo pipefail
A=$1; B=$2; CFG=${3:-configs/bench-s.json}; N=${4:-5}
FLAGS=${BENCH_FLAGS:---batch 8 --seq 256 --steps 3}
ta=(); tb=()
for i in $(seq "$N"); do
  for w in A B; do
    bin=$A; [ $w = B ] && bin=$B
    t=$("$bin" bench --model "$CFG" $FLAGS --json | sed -E 's/.*"tokens_per_s":([0-9.]+).*/\1/')
    if [ $w = A ]; then ta+=("$t"); else tb+=("$t"); fi
    echo "round $i $w $t"
  done
done
med() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ma=$(med "${ta[@]}"); mb=$(med "${tb[@]}")
rs=(); for i in "${!ta[@]}"; do rs+=("$(awk -v a="${ta[$i]}" -v b="${tb[$i]}" 'BEGIN { print b / a }')"); done
mr=$(med "${rs[@]}")
awk -v a="$ma" -v b="$mb" -v c="$CFG" -v r="$mr" 'BEGIN { printf "%s: A %.1f  B %.1f tokens/s (medians), B/A %.4f, median of the rounds\x27 B/A %.4f\n", c, a, b, b / a, r }'
