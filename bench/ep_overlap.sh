#!/usr/bin/env bash
# How much expert-parallel and data-parallel communication the overlap hides.
#
#   bench/ep_overlap.sh [STEPS] [RATE]      (defaults: 6 steps, 10gbit per link)
#
# Trains a bench-s-like model (configs/bench-s.json with MoGE routing over 2 groups, so that
# both ranks get the same token load and rank skew does not pose as communication) with
# expert parallelism E = 2 over 2 emulated hosts (scripts/cluster-emu.sh: network
# namespaces, a tbf-limited link each), one rank per host, once with --overlap off and once
# with --overlap on. Batch 8 x 256 tokens of DeepMind mathematics text. The first step warms
# up; the figures are medians over the others. exposed_frac = comm_exposed_ms / step_ms.
# Prints a table, then one JSON line last. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-6}
RATE=${2:-10gbit}
DATA=${DATA:-../shared/data/mathematics_dataset/train/numbers__place_value.txt}
[ -f "$DATA" ] || { echo "ep_overlap: no data file $DATA (set DATA=...)" >&2; exit 1; }
make -s moe
T=$(mktemp -d /tmp/moe-epov.XXXXXX)
trap 'rm -rf "$T"' EXIT
sed 's/"topk_method": "greedy"/"topk_method": "moge", "n_group": 2/' configs/bench-s.json >"$T/model.json"
grep -q '"moge"' "$T/model.json" || { echo "ep_overlap: could not derive the MoGE config" >&2; exit 1; }

for ov in off on; do
  OMP_NUM_THREADS=1 bash scripts/cluster-emu.sh run 2 --rate "$RATE" -- "$PWD/moe" train --model "$T/model.json" \
    --data "$DATA" --format text --batch 8 --seq 256 --steps "$STEPS" --ep 2 --overlap "$ov" --quiet \
    --out "$T/run-$ov" 2>&1 | grep -v '^cluster-emu:' >&2 || true
  [ -s "$T/run-$ov/log.jsonl" ] || { echo "ep_overlap: the --overlap $ov run wrote no log" >&2; exit 1; }
done

python3 - "$T" "$RATE" <<'EOF'
import json, statistics, sys
T, rate = sys.argv[1], sys.argv[2]
res = {}
for ov in ("off", "on"):
    rows = [json.loads(l) for l in open(f"{T}/run-{ov}/log.jsonl")][1:]   # the first step warms up
    med = lambda k: statistics.median(r[k] for r in rows)
    res[ov] = dict(step=med("step_ms"), comm=med("comm_ms"), exp=med("comm_exposed_ms"),
                   ep=med("ep_exposed_ms"), dp=med("dp_exposed_ms"), tps=med("tokens_per_s"), n=len(rows))
print(f"2 emulated hosts x 1 rank, {rate} per link, bench-s (MoGE 2 groups), E = 2, batch 8 x 256; medians of {res['on']['n']} steps")
print(f"{'overlap':8} {'step ms':>9} {'tokens/s':>9} {'comm ms':>9} {'exposed ms':>11} {'EP exp':>8} {'DP exp':>8} {'exposed frac':>13}")
for ov in ("off", "on"):
    r = res[ov]
    print(f"{ov:8} {r['step']:9.1f} {r['tps']:9.1f} {r['comm']:9.1f} {r['exp']:11.1f} {r['ep']:8.1f} {r['dp']:8.1f} {r['exp'] / r['step']:13.3f}")
print(f"step-time speed-up from overlap: {res['off']['step'] / res['on']['step']:.3f}x")
print(json.dumps({"exposed_frac_no_overlap": round(res["off"]["exp"] / res["off"]["step"], 4),
                  "exposed_frac_overlap": round(res["on"]["exp"] / res["on"]["step"], 4),
                  "step_ms_no_overlap": round(res["off"]["step"], 2), "step_ms_overlap": round(res["on"]["step"], 2)}))
EOF
