#!/usr/bin/env bash
# The solver's scores (issue 14): greedy exact match on the whole interpolate split of each of
# the sixteen modules, one `moe eval --generate` per module. Prints a markdown table (module,
# questions, exact match, the issue's target, ms per answer) and writes the JSON lines to OUT.
#   bench/solver_eval.sh [CKPT] [LIMIT]     (CKPT default models/solver; LIMIT 0: whole split)
# THREADS (default 2) threads, BATCH (256) questions decoded together; MATH_DATA the dataset's folder.
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-models/solver}
LIMIT=${2:-0}
DATA=${MATH_DATA:-../shared/data/mathematics_dataset}
OUT=${OUT:-runs/solver_eval.jsonl}
THREADS=${THREADS:-2}
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
declare -A TARGET=([numbers__place_value]=0.99 [numbers__round_number]=0.98 [comparison__pair]=0.97 [comparison__sort]=0.90
  [arithmetic__add_or_sub]=0.90 [arithmetic__add_sub_multiple]=0.80 [arithmetic__mul]=0.60 [algebra__linear_1d]=0.60
  [calculus__differentiate]=0.90)
MODULES="numbers__place_value numbers__round_number comparison__pair comparison__sort arithmetic__add_or_sub
  arithmetic__add_sub_multiple arithmetic__mul algebra__linear_1d calculus__differentiate algebra__linear_2d
  algebra__polynomial_roots arithmetic__mixed numbers__gcd numbers__is_prime polynomials__evaluate polynomials__expand"
echo "| module | questions | exact match | target | ms per answer |"
echo "|---|---|---|---|---|"
sum=0; n=0
for m in $MODULES; do
  j=$(./moe eval --ckpt "$CKPT" --data "$DATA/interpolate/$m.txt" --generate --json --limit "$LIMIT" --batch "${BATCH:-256}" --threads "$THREADS")
  echo "{\"module\":\"$m\",${j#\{}" >>"$OUT"
  em=$(sed -n 's/.*"exact_match":\([0-9.]*\).*/\1/p' <<<"$j")
  ex=$(sed -n 's/.*"examples":\([0-9]*\).*/\1/p' <<<"$j")
  ms=$(sed -n 's/.*"ms_per_answer":\([0-9.]*\).*/\1/p' <<<"$j")
  t=${TARGET[$m]:-}
  mark=""; [ -n "$t" ] && mark=$(awk -v e="$em" -v t="$t" 'BEGIN { print (e >= t ? " (met)" : " (missed)") }')
  printf '| %s | %s | %.3f | %s | %s |\n' "$m" "$ex" "$em" "${t:+≥ $t$mark}" "$ms"
  sum=$(awk -v s="$sum" -v e="$em" 'BEGIN { print s + e }'); n=$((n + 1))
done
awk -v s="$sum" -v n="$n" 'BEGIN { printf "| mean of %d modules | | %.3f | | |\n", n, s / n }'
