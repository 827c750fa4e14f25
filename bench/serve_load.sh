#!/usr/bin/env bash
# Load benchmark of moe serve (issue 14), loopback only, bounded in time: CLIENTS connections
# (64) for SECONDS (30) send one question each per request, round-robin over 2000 questions of
# the sixteen interpolate splits; wrk (Debian's) measures answers/s and latency, /proc the
# server's resident memory before, after and at its peak.
#   bench/serve_load.sh [CKPT] [SECONDS] [CLIENTS]     (THREADS: the server's, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-models/solver}
SECS=${2:-30}
CLIENTS=${3:-64}
THREADS=${THREADS:-2}
DATA=${MATH_DATA:-../shared/data/mathematics_dataset}
command -v wrk >/dev/null || { echo "serve_load.sh: needs wrk (apt-get install wrk)" >&2; exit 1; }
T=$(mktemp -d /tmp/moe-load.XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$T"' EXIT
for f in "$DATA"/interpolate/*.txt; do awk 'NR % 2 == 1 && NR < 250' "$f"; done >"$T/q.txt"
./moe serve --ckpt "$CKPT" --port 0 --threads "$THREADS" --slots 64 >"$T/out" 2>"$T/err" &
pid=$!
for _ in $(seq 100); do grep -q http "$T/out" && break; sleep 0.1; done
port=$(sed -n 's|.*http://127.0.0.1:\([0-9]*\)/.*|\1|p' "$T/out")
[ -n "$port" ] || { cat "$T/err" >&2; exit 1; }
rss() { awk -v k="$1" '$1 == k":" { printf "%.1f", $2 / 1024 }' /proc/$pid/status; }
# a short warm-up, then the measured run
QUESTIONS="$T/q.txt" wrk -t1 -c8 -d2s -s bench/serve_load.lua "http://127.0.0.1:$port/" >/dev/null
before=$(rss VmRSS)
QUESTIONS="$T/q.txt" wrk -t1 -c"$CLIENTS" -d"${SECS}s" --timeout 10s --latency -s bench/serve_load.lua \
  "http://127.0.0.1:$port/" | tee "$T/wrk"
after=$(rss VmRSS); peak=$(rss VmHWM)
python3 - "$T/wrk" "$before" "$after" "$peak" "$CLIENTS" "$SECS" <<'PY'
import re, sys
w = open(sys.argv[1]).read()
def ms(tag):
    m = re.search(r"^\s*%s\s+([\d.]+)(us|ms|s)" % tag, w, re.M)
    if not m: return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", w).group(1))
non2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", w) or [0, 0])[1])
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", w)
sockerr = sum(map(int, sock.groups())) if sock else 0
print(f"\nclients {sys.argv[5]}, {sys.argv[6]} s: {rps:.1f} answers/s, p50 {ms('50%'):.1f} ms, p99 {ms('99%'):.1f} ms, "
      f"errors {non2xx + sockerr} (non-2xx {non2xx}, socket {sockerr}), RSS {sys.argv[2]} MB before, {sys.argv[3]} MB after, peak {sys.argv[4]} MB")
PY
kill -INT $pid; wait $pid
