#!/usr/bin/env bash
# Every load-balancing method on one real task, side by side.
#
#   bench/balance.sh [STEPS] [MODULE]      (defaults: 300 steps, numbers__place_value)
#
# Trains configs/math-tiny.json (8 experts, top-2) on a DeepMind mathematics module for STEPS
# steps (batch 128, seq 64, lr 3e-3, the same seed) with each method, then greedy exact match
# on the first 500 interpolate questions. Prints one markdown table: final loss, exact match,
# mean max/mean expert load over the last 50 steps (mean over MoE layers), drop rate,
# tokens/s. The ep_group row runs under mpirun with 2 ranks (--ep 2, one thread each), the
# others as one process on all cores.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-300}
MODULE=${2:-numbers__place_value}
DATA=${MATH_DATA:-../shared/data/mathematics_dataset}
[ -f "$DATA/train/$MODULE.txt" ] || { echo "balance: no $DATA/train/$MODULE.txt" >&2; exit 1; }
make -s moe
T=$(mktemp -d /tmp/moe-balance.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# name | config changes (JSON) | how it runs
METHODS=(
  'none|{"aux_loss_alpha": 0}|single'
  'aux, batch|{"aux_loss_alpha": 0.01, "aux_scope": "batch"}|single'
  'aux, sequence|{"aux_loss_alpha": 0.01, "aux_scope": "sequence"}|single'
  'aux, ep_group (MPI, 2 ranks, --ep 2)|{"aux_loss_alpha": 0.01, "aux_scope": "ep_group"}|mpi'
  'aux-loss-free bias, gamma 0.001|{"aux_loss_alpha": 0, "bias_update_speed": 0.001}|single'
  'moge, 2 groups|{"aux_loss_alpha": 0, "topk_method": "moge", "n_group": 2}|single'
  'group_limited, 4 groups, top 2|{"aux_loss_alpha": 0, "topk_method": "group_limited", "n_group": 4, "topk_group": 2}|single'
  'capacity factor 1.0|{"aux_loss_alpha": 0, "capacity_factor": 1.0}|single'
)
FLAGS=(--data "$DATA/train/$MODULE.txt" --steps "$STEPS" --batch 128 --seq 64 --lr 3e-3 --warmup 30
       --decay-steps "$STEPS" --min-lr 3e-4 --seed 7 --quiet)
i=0
for m in "${METHODS[@]}"; do
  IFS='|' read -r name change how <<<"$m"
  i=$((i + 1))
  python3 -c "import json,sys; c=json.load(open('configs/math-tiny.json')); c.update(json.loads(sys.argv[1])); json.dump(c, open(sys.argv[2], 'w'), indent=1)" \
    "$change" "$T/c$i.json"
  echo "balance: $name" >&2
  if [ "$how" = mpi ]; then
    mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS=1 ./moe train --model "$T/c$i.json" "${FLAGS[@]}" --ep 2 --out "$T/r$i"
  else
    ./moe train --model "$T/c$i.json" "${FLAGS[@]}" --out "$T/r$i"
  fi
  ./moe eval --ckpt "$T/r$i" --data "$DATA/interpolate/$MODULE.txt" --limit 500 --generate --json >"$T/e$i.json"
  echo "$name" >"$T/n$i"
done

python3 - "$T" "$i" "$MODULE" "$STEPS" <<'EOF'
import json, sys
T, n, module, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
print(f"math-tiny (8 experts, top-2), {module}, {steps} steps, batch 128 x seq <= 64; exact match on 500 interpolate questions\n")
print("| method | final loss | exact match | max/mean load, last 50 steps | drop rate | tokens/s |")
print("|---|---|---|---|---|---|")
for i in range(1, n + 1):
    rows = [json.loads(l) for l in open(f"{T}/r{i}/log.jsonl")]
    ev = json.load(open(f"{T}/e{i}.json"))
    last = rows[-50:]
    mm = [sum(max(L) * len(L) / sum(L) for L in r["expert_load"]) / len(r["expert_load"]) for r in last]
    assigned = sum(sum(sum(L) for L in r["expert_load"]) for r in rows)
    dropped = sum(r["dropped"] for r in rows)
    tps = sorted(r["tokens_per_s"] for r in rows[1:])[len(rows[1:]) // 2]
    name = open(f"{T}/n{i}").read().strip()
    print(f"| {name} | {rows[-1]['loss']:.4f} | {ev['exact_match']:.3f} | {sum(mm) / len(mm):.3f} | "
          f"{dropped / assigned if assigned else 0:.4f} | {tps:.0f} |")
EOF
