#!/usr/bin/env bash
# This machine as cluster files for moe simulate (issue 16, docs/SIMULATE.md):
#   1. the links: an all-reduce (started, then waited for, as moe train sums its gradients)
#      timed by `moe calibrate --comm` between 2 ranks on this
#      host (shared memory: intra_node), and between 2 emulated hosts (scripts/cluster-emu.sh)
#      at 10 and 1 Gbit/s (inter_node);
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
link() {   # the --comm line -> "BW,LAT"
  python3 -c 'import json, sys; r = json.loads(sys.stdin.read().strip().splitlines()[-1]); print("%.4f,%.2f" % (r["bw_gbs"], r["latency_us"]))'
}
intra=$(mpirun --oversubscribe -np 2 ./moe calibrate --comm --seconds 4 | link)
echo "intra_node (2 ranks, shared memory): $intra GB/s,us"
inter10=$(scripts/cluster-emu.sh run 2 --rate 10gbit -- "$PWD/moe" calibrate --comm --seconds 4 | link)
echo "inter_node (2 emulated hosts, 10 Gbit/s): $inter10 GB/s,us"
inter1=$(scripts/cluster-emu.sh run 2 --rate 1gbit -- "$PWD/moe" calibrate --comm --seconds 4 | link)
echo "inter_node (2 emulated hosts, 1 Gbit/s): $inter1 GB/s,us"
unset OMP_NUM_THREADS
./moe calibrate --out "$OUT/local.json" --name local --intra "$intra" --inter "$inter10" --seconds "$SECS"
# the same machine behind a 1 Gbit/s network: only the inter-node link differs
python3 - "$inter1" "$OUT" <<'EOF'
import json, sys
bw, lat = (float(x) for x in sys.argv[1].split(","))
d = json.load(open(sys.argv[2] + "/local.json"))
d["name"] = "local-1g"
d["inter_node"] = {"bw_gbs": bw, "latency_us": lat}
d["sources"]["inter_node"] = "two emulated hosts at 1 Gbit/s (scripts/cluster-emu.sh), moe calibrate --comm"
with open(sys.argv[2] + "/local-1g.json", "w") as f:
    json.dump(d, f, indent=2)
    f.write("\n")
EOF
echo "wrote $OUT/local.json and $OUT/local-1g.json"
