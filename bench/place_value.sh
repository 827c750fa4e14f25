#!/usr/bin/env bash
# Real-data benchmark (not a test): train configs/math-tiny.json on DeepMind's
# numbers__place_value train split for at most BUDGET seconds (default 600) on this
# machine's cores, then exact match on the whole interpolate split.
#   bench/place_value.sh [BUDGET] [MODULE]
set -euo pipefail
cd "$(dirname "$0")/.."
BUDGET=${1:-600}
MODULE=${2:-numbers__place_value}
DATA=${MATH_DATA:-../shared/data/mathematics_dataset}
OUT=${OUT:-runs/$MODULE}
make -s moe
rm -rf "$OUT"
./moe train --model configs/math-tiny.json --data "$DATA/train/$MODULE.txt" --out "$OUT" \
  --steps 100000 --time-budget "$BUDGET" --batch 128 --seq 64 --lr 3e-3 --warmup 100 \
  --decay-steps $((BUDGET * 7 / 2)) --min-lr 3e-4
./moe eval --ckpt "$OUT" --data "$DATA/interpolate/$MODULE.txt" --generate --json
