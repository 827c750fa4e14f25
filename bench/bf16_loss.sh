#!/usr/bin/env bash
# --act-dtype bf16 against f32 on a 300-step configs/math-tiny.json run (same seed, same
# data): the relative change of the final loss and of the mean loss over the last 50 steps.
#   SEED=S bench/bf16_loss.sh [STEPS]   (seed 3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
SEED=${SEED:-3}
make -s moe
mkdir -p runs
./moe gen-math --n 50000 --seed 1 --out runs/bf16-data.txt
for dt in f32 bf16; do
  rm -rf runs/bf16-$dt
  ./moe train --model configs/math-tiny.json --data runs/bf16-data.txt --out runs/bf16-$dt --steps "$STEPS" \
    --batch 64 --seq 80 --lr 3e-3 --warmup 50 --seed "$SEED" --act-dtype $dt --quiet
done
/usr/bin/python3 - <<'P'
import json
def losses(d): return [json.loads(l)["loss"] for l in open(f"runs/bf16-{d}/log.jsonl")]
a, b = losses("f32"), losses("bf16")
ma, mb = sum(a[-50:]) / 50, sum(b[-50:]) / 50
print(json.dumps({"steps": len(a), "final_f32": a[-1], "final_bf16": b[-1],
                  "final_rel_change": abs(b[-1] - a[-1]) / a[-1],
                  "last50_f32": ma, "last50_bf16": mb, "last50_rel_change": abs(mb - ma) / ma}))
P
