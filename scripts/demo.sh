#!/usr/bin/env bash
# make demo: generate math data, train configs/math-tiny.json for a few minutes, then
# answer sample problems and report exact match and latency. Under 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
MOE=./moe
OUT=${DEMO_DIR:-runs/demo}
BUDGET=${DEMO_SECONDS:-300}
TASKS=${DEMO_TASKS:-place_value,compare,round,add}
mkdir -p data runs
echo "== 1. data: moe gen-math ($TASKS)"
$MOE gen-math --n 200000 --seed 1 --tasks "$TASKS" --out data/demo-train.txt
$MOE gen-math --n 500 --seed 2 --tasks "$TASKS" --out data/demo-test.txt
echo "== 2. training configs/math-tiny.json for ${BUDGET}s into $OUT"
rm -rf "$OUT"
$MOE train --model configs/math-tiny.json --data data/demo-train.txt --out "$OUT" \
  --steps 100000 --time-budget "$BUDGET" --batch 128 --seq 80 --lr 3e-3 --warmup 100 --decay-steps 1400 --min-lr 3e-4
echo "== 3. sample problems (moe solve)"
head -20 data/demo-test.txt | awk 'NR % 2 == 1' > runs/demo-questions.txt
head -20 data/demo-test.txt | awk 'NR % 2 == 0' > runs/demo-answers.txt
$MOE solve --ckpt "$OUT" --latency < runs/demo-questions.txt > runs/demo-got.txt 2> runs/demo-latency.txt
paste -d '\t' runs/demo-questions.txt runs/demo-got.txt runs/demo-answers.txt runs/demo-latency.txt |
  awk -F '\t' '{ printf "  %-44s -> %-10s %s  (%s)\n", $1, $2, ($2 == $3 ? "ok" : "expected " $3), $4 }'
echo "== 4. exact match on 500 held-out problems"
$MOE eval --ckpt "$OUT" --data data/demo-test.txt --generate
