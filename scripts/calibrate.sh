#!/usr/bin/env bash
# This machine as cluster files for moe simulate (issue 16, docs/SIMULATE.md):
#   1. the links: `moe calibrate --comm` between 2 ranks on this host (shared memory:
#      intra_node), and between 2 emulated hosts (scripts/cluster-emu.sh) at 10 and 1 Gbit/s
#      (inter_node): an all-reduce started and waited for (as moe train sums its gradients),
#      the experts' all-to-all as moe train sends it, what that exchange costs when overlapped
#      with work (comm_share, from the network's line), and the ranks' timing jitter (sync,
#      and how it falls with the work between meetings: the median of the three lines); and
#      with twice as many ranks as cores on this host, how much of its core a waiting rank
#      keeps (idle_kept, the median of three: mpirun --oversubscribe's ranks yield);
#   2. the compute: `moe calibrate` on all cores (one process = one device).
# Writes clusters/local.json (the 10 Gbit/s network) and clusters/local-1g.json (or into
# the directory OUT names).
#   scripts/calibrate.sh [SECONDS]      (the compute's measuring time, default 16)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-16}
OUT=${OUT:-clusters}
mkdir -p "$OUT"
make -s moe
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
field() {   # FIELD LINE: one number of a --comm line ("link": BW,LAT,A2A_BW,A2A_LAT; "sync": SYNC,SYNC_MS,SYNC_DECAY)
  python3 -c 'import json, sys
r = json.loads(sys.argv[2].strip().splitlines()[-1])
if sys.argv[1] == "link": print("%.4f,%.2f,%.4f,%.2f" % (r["bw_gbs"], r["latency_us"], r["a2a_bw_gbs"], r["a2a_latency_us"]))
else: print(r[sys.argv[1]])' "$1" "$2"
}
median() {   # FIELD LINE...: the median of one number over several --comm lines ("sync": SYNC,SYNC_MS,SYNC_DECAY,
             # each the median of its own: the jitter is the machine's, whatever the link, and noisy)
  python3 -c 'import json, sys, statistics as st
rs = [json.loads(a.strip().splitlines()[-1]) for a in sys.argv[2:]]
m = lambda k: st.median(r[k] for r in rs)
print("%.4f,%.2f,%.3f" % (m("sync"), m("sync_ms"), m("sync_decay")) if sys.argv[1] == "sync" else m(sys.argv[1]))' "$@"
}
intra=$(mpirun --oversubscribe -np 2 ./moe calibrate --comm --seconds 8)
echo "intra_node (2 ranks, shared memory): $intra"
inter10=$(scripts/cluster-emu.sh run 2 --rate 10gbit -- "$PWD/moe" calibrate --comm --seconds 8)
echo "inter_node (2 emulated hosts, 10 Gbit/s): $inter10"
inter1=$(scripts/cluster-emu.sh run 2 --rate 1gbit -- "$PWD/moe" calibrate --comm --seconds 8)
echo "inter_node (2 emulated hosts, 1 Gbit/s): $inter1"
over=()
for i in 1 2 3; do   # (three times: one in a dozen read near 1)
  over+=("$(mpirun --oversubscribe -np $((2 * $(getconf _NPROCESSORS_ONLN))) ./moe calibrate --comm --seconds 4)")   # (nproc obeys OMP_NUM_THREADS)
  echo "twice as many ranks as cores: ${over[-1]}"
done
unset OMP_NUM_THREADS
./moe calibrate --out "$OUT/local.json" --name local --intra "$(field link "$intra")" --inter "$(field link "$inter10")" \
  --comm-share "$(field comm_share "$inter10")" --sync "$(median sync "$intra" "$inter10" "$inter1")" --idle-kept "$(median idle_kept "${over[@]}")" --seconds "$SECS"
# the same machine behind a 1 Gbit/s network: only the inter-node link and its overlap differ
python3 - "$(field link "$inter1")" "$(field comm_share "$inter1")" "$OUT" <<'EOF'
import json, sys
bw, lat, abw, alat = (float(x) for x in sys.argv[1].split(","))
d = json.load(open(sys.argv[3] + "/local.json"))
d["name"] = "local-1g"
d["inter_node"] = {"bw_gbs": bw, "latency_us": lat, "a2a_bw_gbs": abw, "a2a_latency_us": alat}
d["efficiency"]["comm_share"] = float(sys.argv[2])
d["sources"]["inter_node"] = "two emulated hosts at 1 Gbit/s (scripts/cluster-emu.sh), moe calibrate --comm"
with open(sys.argv[3] + "/local-1g.json", "w") as f:
    json.dump(d, f, indent=2)
    f.write("\n")
EOF
echo "wrote $OUT/local.json and $OUT/local-1g.json"
