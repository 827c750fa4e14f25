#!/usr/bin/env bash
# --act-dtype bf16 against f32 on 300-step configs/math-tiny.json runs (same seed, same
# data, the default selective recomputation): per seed, the relative change of the final
# loss and of the mean loss over the last 50 steps; over the seeds, the change of the
# seed-mean of the last-50 losses (chaotic per-run drift averages out there, a systematic
# effect of bf16 storage would not).
#   SEEDS="1 2 3 4" [DECAY=1] bench/bf16_loss.sh [STEPS]   (seed 3 alone by default;
#   DECAY=1: cosine decay to 3e-4 over the run, as the project's training runs use)
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
SEEDS=${SEEDS:-${SEED:-3}}
SCHED=()
[ "${DECAY:-0}" = 1 ] && SCHED=(--decay-steps "$STEPS" --min-lr 3e-4)
make -s moe
mkdir -p runs
./moe gen-math --n 50000 --seed 1 --out runs/bf16-data.txt
for s in $SEEDS; do
  for dt in f32 bf16; do
    rm -rf runs/bf16-$dt-s$s
    ./moe train --model configs/math-tiny.json --data runs/bf16-data.txt --out runs/bf16-$dt-s$s --steps "$STEPS" \
      --batch 64 --seq 80 --lr 3e-3 --warmup 50 "${SCHED[@]}" --seed "$s" --act-dtype $dt --quiet
  done
done
/usr/bin/python3 - $SEEDS <<'P'
import json, sys
def losses(d): return [json.loads(l)["loss"] for l in open(f"runs/bf16-{d}/log.jsonl")]
ma_all, mb_all = [], []
for s in sys.argv[1:]:
    a, b = losses(f"f32-s{s}"), losses(f"bf16-s{s}")
    ma, mb = sum(a[-50:]) / 50, sum(b[-50:]) / 50
    ma_all.append(ma); mb_all.append(mb)
    print(json.dumps({"seed": int(s), "steps": len(a), "final_f32": a[-1], "final_bf16": b[-1],
                      "final_rel_change": abs(b[-1] - a[-1]) / a[-1],
                      "last50_f32": ma, "last50_bf16": mb, "last50_rel_change": abs(mb - ma) / ma}))
if len(ma_all) > 1:
    A, B = sum(ma_all) / len(ma_all), sum(mb_all) / len(mb_all)
    print(json.dumps({"seeds": len(ma_all), "seed_mean_last50_f32": A, "seed_mean_last50_bf16": B,
                      "seed_mean_rel_change": abs(B - A) / A}))
P
