#!/usr/bin/env bash
# Dynamic expert placement on a skewed router, over 2 emulated hosts.
#
#   bench/placement.sh [STEPS] [RATE]      (defaults: 10 steps, 10gbit per link)
#
# configs/bench-s.json (32 experts, top-4) is trained for one step, then its
# e_score_correction_bias is set to +1 on experts 0 and 1 of every layer (the bias update is
# off), so that every token picks both: their rank (experts 0-15 with E = 2) computes about
# 1.5x the mean. From there it trains STEPS more steps on 2 emulated hosts
# (scripts/cluster-emu.sh), 1 rank each, --ep 2, once as placed at the start and once with
# --replace-every 3 --redundant-experts R (default 2: room for replicas of the two hot experts)
# and --replace-when $WHEN (default paying).
# Medians over the steps after the first placement that move no experts: step time, the
# busiest rank's load (max/mean of the rows each rank's experts computed, worst layer); the
# steps that migrate are reported apart (their extra time is the migration's cost), with the
# losses' largest relative difference. Prints a table and one JSON line last. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-10}
RATE=${2:-10gbit}
R=${R:-2}   # redundant slots (R=2: replicas for the two favoured experts)
WHEN=${WHEN:-paying}
DATA=${DATA:-../shared/data/mathematics_dataset/train/numbers__place_value.txt}
[ -f "$DATA" ] || { echo "placement: no data file $DATA (set DATA=...)" >&2; exit 1; }
make -s moe
T=$(mktemp -d /tmp/moe-place.XXXXXX)
trap 'rm -rf "$T"' EXIT
F=(--data "$DATA" --format text --batch 8 --seq 256 --quiet)
./moe train --model configs/bench-s.json "${F[@]}" --steps 1 --out "$T/base" 2>/dev/null
/usr/bin/python3 - "$T/base/model.safetensors" <<'PY'
import sys; sys.path.insert(0, "tests/ref"); import moe_ref
t, meta = moe_ref.read_safetensors(sys.argv[1])
for k in t:
    if k.endswith("e_score_correction_bias"): t[k][0] = t[k][1] = 1.0
moe_ref.write_safetensors(sys.argv[1], t, meta)
PY
cp -r "$T/base" "$T/fixed"; cp -r "$T/base" "$T/placed"
for run in fixed placed; do
  extra=()
  [ $run = placed ] && extra=(--replace-every 3 --redundant-experts "$R" --replace-when "$WHEN")
  OMP_NUM_THREADS=1 bash scripts/cluster-emu.sh run 2 --rate "$RATE" -- "$PWD/moe" train --resume "$T/$run" \
    --out "$T/$run" "${F[@]}" --steps $((STEPS + 1)) --ep 2 "${extra[@]}" 2>&1 | grep -v '^cluster-emu:' >&2 || true
done
python3 - "$T" "$RATE" "$R" <<'EOF'
import json, statistics, sys
T, rate, R = sys.argv[1], sys.argv[2], sys.argv[3]
rows = {r: [json.loads(l) for l in open(f"{T}/{r}/log.jsonl")][1:] for r in ("fixed", "placed")}
first = next(i for i, x in enumerate(rows["placed"]) if "experts_moved" in x)   # the first placement
steady = {r: [x for i, x in enumerate(v) if i > first and "experts_moved" not in rows["placed"][i]] for r, v in rows.items()}
moves = [x for i, x in enumerate(rows["placed"]) if i > first and "experts_moved" in x]
med = lambda xs, f: statistics.median(f(x) for x in xs)
res = {r: dict(step=med(steady[r], lambda x: x["step_ms"]), load=med(steady[r], lambda x: max(x["rank_load"])),
               tps=med(steady[r], lambda x: x["tokens_per_s"])) for r in rows}
mig_ms = med(moves, lambda x: x["step_ms"]) - res["placed"]["step"] if moves else float("nan")
moved = med(moves, lambda x: x["experts_moved"]) if moves else 0
loss = max(abs(a["loss"] - b["loss"]) / b["loss"] for a, b in zip(rows["placed"], rows["fixed"]))
print(f"bench-s with experts 0 and 1 favoured, 2 emulated hosts x 1 rank, {rate}, --ep 2; medians of {len(steady['fixed'])} steps")
print(f"{'placement':30} {'step ms':>9} {'tokens/s':>9} {'busiest rank / mean':>20}")
for r, name in (("fixed", "fixed (experts 0-15 | 16-31)"), ("placed", f"--replace-every 3, R = {R}")):
    print(f"{name:30} {res[r]['step']:9.1f} {res[r]['tps']:9.1f} {res[r]['load']:20.3f}")
print(f"step-time speed-up {res['fixed']['step'] / res['placed']['step']:.3f}x; a later placement moved {moved:.0f} experts "
      f"(all layers) and cost {mig_ms:.0f} ms; largest relative loss difference {loss:.2e}")
whole = {r: sum(x["step_ms"] for x in v) / 1e3 for r, v in rows.items()}
print(f"all {len(rows['fixed'])} steps, placements included: fixed {whole['fixed']:.1f} s, placed {whole['placed']:.1f} s "
      f"({whole['fixed'] / whole['placed']:.3f}x); experts moved per placement: "
      + " ".join(str(x["experts_moved"]) for x in rows["placed"] if "experts_moved" in x))
print(json.dumps({"rank_load_fixed": round(res["fixed"]["load"], 4), "rank_load_placed": round(res["placed"]["load"], 4),
                  "step_ms_fixed": round(res["fixed"]["step"], 2), "step_ms_placed": round(res["placed"]["step"], 2),
                  "migration_ms": round(mig_ms, 1), "loss_max_rel_diff": loss,
                  "run_s_fixed": round(whole["fixed"], 2), "run_s_placed": round(whole["placed"], 2)}))
EOF
