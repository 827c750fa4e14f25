#!/usr/bin/env bash
# The aux-loss-free bias update (SPEC §1, DeepSeek-V3) over a short run.
#
#   bench/bias_gamma.sh [STEPS] [MODULE] [SEEDS]   (300, calculus__differentiate, "1 2 3")
#
# A 16-expert, top-2, sigmoid version of configs/math-tiny.json with no aux loss trains on a
# DeepMind module with bias_update_speed γ = 0.001 and, for the same seeds, γ = 0. Prints the
# mean over the last 50 steps of each step's max/mean expert load (mean of the MoE layers).
# Env: LR (2e-4), BATCH (128), WARMUP (30), DECAY (STEPS: cosine to MIN_LR over the run),
# MIN_LR (LR/10).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
MODULE=${2:-calculus__differentiate}
SEEDS=${3:-1 2 3}
LR=${LR:-2e-4}; BATCH=${BATCH:-128}; WARMUP=${WARMUP:-30}; DECAY=${DECAY:-$STEPS}
MIN_LR=${MIN_LR:-$(python3 -c "print($LR / 10)")}
DATA=${MATH_DATA:-../shared/data/mathematics_dataset}
[ -f "$DATA/train/$MODULE.txt" ] || { echo "bias_gamma: no $DATA/train/$MODULE.txt" >&2; exit 1; }
make -s moe
T=$(mktemp -d /tmp/moe-gamma.XXXXXX)
trap 'rm -rf "$T"' EXIT
for g in 0.001 0; do
  python3 -c "import json,sys; c=json.load(open('configs/math-tiny.json')); c.update(n_routed_experts=16, scoring_func='sigmoid', aux_loss_alpha=0, bias_update_speed=float(sys.argv[1])); json.dump(c, open(sys.argv[2], 'w'), indent=1)" "$g" "$T/g$g.json"
done
echo "16 experts top-2 sigmoid, $MODULE, $STEPS steps, batch $BATCH x seq <= 64, lr $LR (warm-up $WARMUP, cosine to $MIN_LR at step $DECAY)"
echo "mean max/mean expert load over the last 50 steps:"
for s in $SEEDS; do
  for g in 0.001 0; do
    ./moe train --model "$T/g$g.json" --data "$DATA/train/$MODULE.txt" --out "$T/r" --steps "$STEPS" \
      --batch "$BATCH" --seq 64 --lr "$LR" --warmup "$WARMUP" --decay-steps "$DECAY" --min-lr "$MIN_LR" \
      --seed "$s" --quiet >/dev/null
    python3 - "$T/r/log.jsonl" "$g" "$s" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])][-50:]
mm = [sum(max(L) * len(L) / sum(L) for L in r["expert_load"]) / len(r["expert_load"]) for r in rows]
per = [sum(max(r["expert_load"][l]) * len(r["expert_load"][l]) / sum(r["expert_load"][l]) for r in rows) / len(rows)
       for l in range(len(rows[0]["expert_load"]))]
print(f"  seed {sys.argv[3]}  gamma {sys.argv[2]:>5}: {sum(mm) / len(mm):.3f}   per layer " + " ".join(f"{x:.2f}" for x in per))
PY
    rm -rf "$T/r"
  done
done
