#!/usr/bin/env bash
# make demo: generate math data, train configs/math-tiny.json for a few minutes (the trainer
# at work), then let that model and the shipped solver (models/solver, trained by moe.c for
# hours) answer sample problems, and report both models' exact match per task on held-out
# problems. Under 10 minutes on 2 cores.
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
  --time-budget "$BUDGET" --batch 128 --seq 80 --lr 3e-3 --warmup 100 --decay-steps 1400 --min-lr 3e-4
echo "== 3. sample problems: the model just trained, and the shipped solver (models/solver)"
head -20 data/demo-test.txt | awk 'NR % 2 == 1' > runs/demo-questions.txt
head -20 data/demo-test.txt | awk 'NR % 2 == 0' > runs/demo-answers.txt
$MOE solve --ckpt "$OUT" --latency < runs/demo-questions.txt > runs/demo-got.txt 2> runs/demo-latency.txt
have_solver=0
[ -f models/solver/config.json ] && have_solver=1
if [ $have_solver -eq 1 ]; then
  $MOE solve --ckpt models/solver --latency < runs/demo-questions.txt > runs/demo-solver.txt 2> runs/demo-solver-latency.txt
else
  sed 's/.*/-/' runs/demo-questions.txt > runs/demo-solver.txt; sed 's/.*/no models\/solver/' runs/demo-questions.txt > runs/demo-solver-latency.txt
fi
printf '  %-54s %-22s %-22s %s\n' "question" "demo model (${BUDGET}s)" "shipped solver" "answer"
paste -d '\t' runs/demo-questions.txt runs/demo-got.txt runs/demo-latency.txt runs/demo-solver.txt runs/demo-solver-latency.txt runs/demo-answers.txt |
  awk -F '\t' 'function cut(s) { return length(s) > 12 ? substr(s, 1, 11) "~" : s }
    { printf "  %-54s %-22s %-22s %s\n", $1, ($2 == $6 ? "ok " : "x  ") cut($2) " (" $3 ")", ($4 == $6 ? "ok " : "x  ") cut($4) " (" $5 ")", $6 }'
echo "== 4. exact match per task on 200 held-out problems each (greedy; neither model saw them)"
printf '  %-14s %12s %16s\n' task "demo model" "shipped solver"
for t in ${TASKS//,/ }; do
  $MOE gen-math --n 200 --seed 3 --tasks "$t" --out "data/demo-test-$t.txt"
  em() { $MOE eval --ckpt "$1" --data "data/demo-test-$t.txt" --generate --json | sed -n 's/.*"exact_match":\([0-9.]*\).*/\1/p'; }
  a=$(em "$OUT"); b="-"; [ $have_solver -eq 1 ] && b=$(em models/solver)
  printf '  %-14s %12s %16s\n' "$t" "$a" "$b"
done
echo "   (the shipped solver's scores on DeepMind's sixteen interpolate splits: README, bench/solver_eval.sh)"
