#!/usr/bin/env bash
# The baseline the solver's other modules are held against (issue 14): configs/math-tiny.json
# trained for BUDGET seconds (600) on all sixteen modules' train splits at once, the bench
# recipe (batch 128, lr 3e-3, warm-up 100, cosine to 3e-4 over the steps the budget allows at
# about 3.4 steps/s), then bench/solver_eval.sh on the whole interpolate splits.
#   bench/solver_baseline.sh [BUDGET] [LIMIT]     (LIMIT: questions a module, 0 = all)
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-600}
LIMIT=${2:-0}
DATA=${MATH_DATA:-../shared/data/mathematics_dataset}
OUT=${OUT:-runs/solver-baseline}
make -s moe
rm -rf "$OUT"
files=$(ls "$DATA"/train/*.txt | tr '\n' ',' | sed 's/,$//')
./moe train --model configs/math-tiny.json --data "$files" --out "$OUT" --time-budget "$BUDGET" --batch 128 --seq 200 \
  --lr 3e-3 --warmup 100 --decay-steps $((BUDGET * 34 / 10)) --min-lr 3e-4
OUT=runs/solver-baseline.jsonl bench/solver_eval.sh "$OUT" "$LIMIT"
