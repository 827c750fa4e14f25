#!/usr/bin/env bash
# Paired answering latency of two builds on one core: the 160 questions of
# bench/solve_latency.sh (ten of each interpolate module) answered one at a time by each build
# in turn, ROUNDS times; each question's time is its fastest over the rounds (the machine's
# drift and its neighbours only ever add), then the median, p90 and max of those per build,
# and whether the two builds gave the same answers.
#   bench/solve_ab.sh OLD_BINARY NEW_BINARY [CKPT] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
A=$1; B=$2; CKPT=${3:-models/solver}; N=${4:-5}
DATA=${MATH_DATA:-../shared/data/mathematics_dataset}
T=$(mktemp -d /tmp/moe-solve-ab.XXXXXX)
trap 'rm -rf "$T"' EXIT
for f in "$DATA"/interpolate/*.txt; do awk 'NR % 2 == 1 && NR < 20' "$f"; done >"$T/q"
for i in $(seq "$N"); do
  for w in A B; do
    bin=$A; [ $w = B ] && bin=$B
    taskset -c 0 "$bin" solve --ckpt "$CKPT" --threads 1 --latency <"$T/q" >"$T/ans.$w" 2>"$T/lat.$w.$i"
  done
done
for w in A B; do
  paste "$T"/lat.$w.* | sed 's/ ms[^\t]*//g' | awk '{ m = $1; for (i = 2; i <= NF; i++) if ($i < m) m = $i; print m }' | sort -n >"$T/min.$w"
done
pct() { awk -v p="$2" '{ v[NR] = $1 } END { i = int(NR * p + 0.5); if (i < 1) i = 1; print v[i] }' "$1"; }
for w in A B; do
  bin=$A; [ $w = B ] && bin=$B
  echo "$w ($bin): each question's fastest of $N: median $(pct "$T/min.$w" 0.5) ms, p90 $(pct "$T/min.$w" 0.9) ms, max $(tail -1 "$T/min.$w") ms"
done
awk -v a="$(pct "$T/min.A" 0.5)" -v b="$(pct "$T/min.B" 0.5)" -v pa="$(pct "$T/min.A" 0.9)" -v pb="$(pct "$T/min.B" 0.9)" \
  'BEGIN { printf "B/A: median %.3f, p90 %.3f\n", b / a, pb / pa }'
cmp -s "$T/ans.A" "$T/ans.B" && echo "the same $(wc -l <"$T/q") answers" || echo "ANSWERS DIFFER: $(diff "$T/ans.A" "$T/ans.B" | grep -c '^<') of $(wc -l <"$T/q")"
