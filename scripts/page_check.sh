#!/usr/bin/env bash
# moe serve's page checked in headless Chromium (scripts/page_check.py): starts the server on
# a free loopback port, types QUESTION, compares the page's answer with moe solve's and saves
# the screenshot to PNG. Installs Debian's chromium and python3-websocket when missing.
#   scripts/page_check.sh [CKPT] [QUESTION] [PNG]
set -euo pipefail
cd "$(dirname "$0")/.."
CKPT=${1:-models/solver}
Q=${2:-Differentiate 3*x**4 - 2*x wrt x.}
PNG=${3:-docs/serve-page.png}
need=()
command -v chromium >/dev/null || need+=(chromium)
/usr/bin/python3 -c 'import websocket' 2>/dev/null || need+=(python3-websocket)
if [ ${#need[@]} -gt 0 ]; then
  echo "page_check.sh: installing ${need[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
T=$(mktemp -d /tmp/moe-page.XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$T"' EXIT
./moe serve --ckpt "$CKPT" --port 0 --threads 1 >"$T/out" 2>"$T/err" &
pid=$!
for _ in $(seq 100); do grep -q http "$T/out" && break; sleep 0.1; done
url=$(grep -o 'http://[0-9.:]*/' "$T/out") || { cat "$T/err" >&2; exit 1; }
expected=$(./moe solve --ckpt "$CKPT" "$Q")
/usr/bin/python3 scripts/page_check.py "$url" "$Q" "$expected" "$PNG"
