#!/usr/bin/env bash
# The losses and gradient norms of a fixed 40-step run of each reference config, in exact
# storage (--recompute none --act-dtype f32) and in the defaults, one line per step:
#   CONFIG MODE STEP LOSS GRAD_NORM
# A refactoring that keeps the math prints the same lines (bit for bit, as logged with 9
# digits) on the same machine, BLAS and thread count; compare with bench/refactor_losses.before:
#   bench/refactor_losses.sh > /tmp/after && diff bench/refactor_losses.before /tmp/after
set -euo pipefail
cd "$(dirname "$0")/.."
MOE=${MOE:-./moe}
DATA=${DATA:-../shared/data/mathematics_dataset/train/numbers__place_value.txt}
STEPS=${STEPS:-40}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
T=$(mktemp -d /tmp/moe-losses.XXXXXX)
trap 'rm -rf "$T"' EXIT
for cfg in bench-tiny bench-s bench-fine math-tiny; do
  for mode in exact default; do
    extra=""; [ $mode = exact ] && extra="--recompute none --act-dtype f32"
    $MOE train --model configs/$cfg.json --data "$DATA" --out "$T/$cfg-$mode" --steps "$STEPS" --batch 16 \
      --seq 64 --seed 5 --quiet $extra >/dev/null
    sed -E 's/.*"step":([0-9]+),"loss":([^,]*),.*"grad_norm":([^,]*),.*/\1 \2 \3/' "$T/$cfg-$mode/log.jsonl" |
      awk -v c=$cfg -v m=$mode '{ print c, m, $0 }'
  done
done
