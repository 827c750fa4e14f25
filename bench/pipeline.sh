#!/usr/bin/env bash
# Pipeline parallelism on emulated hosts (scripts/cluster-emu.sh: one rank per host, a
# tbf-limited link each): the measured bubble against the schedule's (S-1)/(m·V), the step
# time with V = 1 and V = 2 (interleaving's gain), and the time waited for neighbours with
# the receives posted a pass ahead (--overlap on) and when each pass starts (off).
#
#   bench/pipeline.sh [STEPS] [RATE] [HOSTS...]     (defaults: 6 steps, 10gbit, hosts 2 4)
#   EP=1 bench/pipeline.sh [STEPS] [RATE]            pipeline x expert parallelism on 4 hosts:
#       --pp 2 --ep 2, V 1 and 2, --overlap on (steady passes paired: one micro-batch's
#       all-to-all under another's compute) against off; step time, the experts' exchange
#       left exposed (ep_exposed_ms) and the bubble
#
# The model: 8 layers of hidden 256 (8 experts top-2 + 1 shared, the first layer dense), so
# that S·V ≤ 8; batch 16 x 128 tokens of DeepMind mathematics text in micro-batches of 2
# (m = 8). The first step warms up; the figures are medians over the others. The measured
# bubble is bubble_ms / (step_ms - bubble_ms): the time a stage waited for its neighbours'
# data against the time it computed; "in transit" the part of that wait after the data was
# sent (pp_transit_ms; the rest the neighbour had not made it yet). Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-6}
RATE=${2:-10gbit}
shift $(( $# > 2 ? 2 : $# ))
HOSTS=${*:-2 4}
DATA=${DATA:-../shared/data/mathematics_dataset/train/numbers__place_value.txt}
[ -f "$DATA" ] || { echo "pipeline.sh: no data file $DATA (set DATA=...)" >&2; exit 1; }
make -s moe
T=$(mktemp -d /tmp/moe-pipe.XXXXXX)
trap 'rm -rf "$T"' EXIT
cat >"$T/model.json" <<'J'
{"vocab_size": 260, "hidden_size": 256, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
 "intermediate_size": 768, "moe_intermediate_size": 256, "n_routed_experts": 8, "num_experts_per_tok": 2,
 "n_shared_experts": 1, "first_k_dense_replace": 1, "max_position_embeddings": 256}
J
if [ -n "${EP:-}" ]; then
  for V in 1 2; do
    for ov in on off; do
      OMP_NUM_THREADS=1 bash scripts/cluster-emu.sh run 4 --rate "$RATE" -- "$PWD/moe" train --model "$T/model.json" \
        --data "$DATA" --format text --batch 16 --micro-batch 1 --seq 128 --steps "$STEPS" --pp 2 --vpp "$V" --ep 2 \
        --overlap "$ov" --quiet --out "$T/ep-$V-$ov" 2>&1 | grep -v '^cluster-emu:' >&2 || true
      [ -s "$T/ep-$V-$ov/log.jsonl" ] || { echo "pipeline.sh: the EP V $V run wrote no log" >&2; exit 1; }
    done
  done
  python3 - "$T" "$RATE" <<'PY'
import json, statistics, sys
T, rate = sys.argv[1], sys.argv[2]
print(f"{rate} per link, 4 emulated hosts, --pp 2 --ep 2 (2 ranks a stage), batch 16 in micro-batches of 1 (m = 8 a stage); medians after the first step")
print(f"{'V':>2} {'overlap':>8} {'step ms':>9} {'ep exposed ms':>14} {'bubble ms':>10}")
res = {}
for V in (1, 2):
    for ov in ("on", "off"):
        rows = [json.loads(l) for l in open(f"{T}/ep-{V}-{ov}/log.jsonl")][1:]
        med = lambda k: statistics.median(r.get(k, 0) for r in rows)
        res[(V, ov)] = (med("step_ms"), med("ep_exposed_ms"), med("bubble_ms"))
        print(f"{V:2d} {ov:>8} {res[(V, ov)][0]:9.1f} {res[(V, ov)][1]:14.1f} {res[(V, ov)][2]:10.1f}")
    print(f"   V {V}: pairs (overlap on) vs off: step {res[(V, 'off')][0] / res[(V, 'on')][0]:.3f}x, "
          f"exposed all-to-all {res[(V, 'on')][1]:.1f} vs {res[(V, 'off')][1]:.1f} ms")
PY
  exit 0
fi
B=16; MB=2
for S in $HOSTS; do
  for V in 1 2; do
    for ov in on off; do
      [ "$V" = 1 ] && [ "$ov" = off ] && continue
      OMP_NUM_THREADS=1 bash scripts/cluster-emu.sh run "$S" --rate "$RATE" -- "$PWD/moe" train --model "$T/model.json" \
        --data "$DATA" --format text --batch $B --micro-batch $MB --seq 128 --steps "$STEPS" --pp "$S" --vpp "$V" \
        --overlap "$ov" --quiet --out "$T/run-$S-$V-$ov" 2>&1 | grep -v '^cluster-emu:' >&2 || true
      [ -s "$T/run-$S-$V-$ov/log.jsonl" ] || { echo "pipeline.sh: the S $S V $V run wrote no log" >&2; exit 1; }
    done
  done
done
python3 - "$T" "$RATE" "$B" "$MB" $HOSTS <<'PY'
import json, statistics, sys
T, rate, B, MB = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
hosts = [int(h) for h in sys.argv[5:]]
m = B // MB
print(f"{rate} per link, one rank per emulated host, 8 layers of hidden 256, batch {B} in {m} micro-batches; medians of the steps after the first")
print(f"{'S':>2} {'V':>2} {'recv':>6} {'step ms':>9} {'bubble ms':>10} {'in transit':>11} {'measured':>9} {'(S-1)/(mV)':>11} {'exposed ms':>11}")
out = {}
for S in hosts:
    for V, ov in ((1, "on"), (2, "on"), (2, "off")):
        rows = [json.loads(l) for l in open(f"{T}/run-{S}-{V}-{ov}/log.jsonl")][1:]
        med = lambda k: statistics.median(r[k] for r in rows)
        st, bu, ex, tr = med("step_ms"), med("bubble_ms"), med("pp_exposed_ms"), med("pp_transit_ms")
        sched = (S - 1) / (m * V)
        meas = bu / (st - bu)
        out[f"S{S}_V{V}_{ov}"] = {"step_ms": round(st, 1), "bubble_frac": round(meas, 4), "schedule": round(sched, 4), "exposed_ms": round(ex, 1),
                                  "transit_ms": round(tr, 1)}
        print(f"{S:2d} {V:2d} {('ahead' if ov == 'on' else 'at pass'):>6} {st:9.1f} {bu:10.1f} {tr:11.1f} {meas:9.3f} {sched:11.3f} {ex:11.1f}")
    print(f"   S {S}: interleaving (V 2 vs 1) step-time gain {out[f'S{S}_V1_on']['step_ms'] / out[f'S{S}_V2_on']['step_ms']:.3f}x; "
          f"receives ahead vs at the pass: {out[f'S{S}_V2_off']['step_ms'] / out[f'S{S}_V2_on']['step_ms']:.3f}x")
print(json.dumps(out))
PY
