#!/usr/bin/env bash
# moe simulate against real runs of this machine (issue 16): each run below is measured, then
# predicted from clusters/local.json (scripts/calibrate.sh: microbenchmarks of moe.c's kernels
# and of the links, none of these runs). Single-process moe bench (its best step), and
# moe train under mpirun (the median step_ms of steps 3..N of its log) with data, expert and
# pipeline parallelism, on one host and on 2 and 4 emulated hosts at 10 and 1 Gbit/s, and a
# run whose expert load is skewed (priced with --load from its own log).
# Prints a markdown table and the median and worst absolute error.
#   bench/sim_local.sh [STEPS]     (train steps a run, default 8)
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-8}
make -s moe
T=$(mktemp -d /tmp/moe-simlocal.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
NCORE=$(nproc)
cat ../shared/data/mathematics_dataset/train/*.txt | head -c 4000000 >"$T/text.txt"
rows=()
errs=()
median_step() {   # the median step_ms of steps 3.. of a log
  python3 -c "
import json, sys
s = sorted(json.loads(l)['step_ms'] for l in open('$1') if '\"step_ms\"' in l and json.loads(l).get('step', 0) >= 3)
print(s[len(s) // 2] if s else 'nan')"
}
predict() {   # ARGS...: moe simulate's step_ms
  ./moe simulate "$@" --json 2>"$T/err" | python3 -c 'import json, sys; print(json.load(sys.stdin)["step_ms"])' || echo "nan ($(cat "$T/err"))"
}
record() {   # NAME MEASURED PREDICTED
  local e
  e=$(python3 -c "print('%.1f' % (100 * ($3 - $2) / $2))" 2>/dev/null || echo nan)
  rows+=("| $1 | $(printf %.1f "$2") | $(printf %.1f "$3") | $e% |")
  errs+=("$e")
  echo "$1: measured $2 ms, predicted $3 ms ($e%)" >&2
}

# 1. single process, all cores: moe bench's best step
for run in "bench-s 8 256" "bench-s 16 256" "bench-fine 8 256" "bench-fine 16 256" "pangu-tiny 8 256" "pangu-tiny 16 256"; do
  read -r cfg B S <<<"$run"
  m=$(./moe bench --model "configs/$cfg.json" --batch "$B" --seq "$S" --steps 6 --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["step_ms"])')
  p=$(predict --model "configs/$cfg.json" --cluster clusters/local.json --layout tp=1,pp=1 --devices 1 --micro-batch "$B" \
      --global-batch "$B" --seq "$S" --recompute selective --zero 0)
  record "moe bench $cfg, batch $B x $S" "$m" "$p"
done

# 2. moe train under mpirun: P ranks of one thread (or less: 4 ranks share 2 cores)
train_run() {   # NAME HOSTS(0: one host) RATE P FLAGS... -- SIMFLAGS...
  local name=$1 hosts=$2 rate=$3 P=$4; shift 4
  local flags=() sim=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift; sim=("$@")
  local out="$T/$(echo "$name" | tr -c 'a-z0-9' _)"
  local args=(train --model configs/bench-s.json --data "${DATA:-$T/text.txt}" --format text --out "$out" --batch 16 --micro-batch 2 --seq 256
              --steps "$STEPS" --quiet --seed 5 "${flags[@]}")
  if [ "$hosts" -eq 0 ]; then
    OMP_NUM_THREADS=1 timeout 600 mpirun --oversubscribe -np "$P" -x OMP_NUM_THREADS ./moe "${args[@]}" >"$T/log" 2>&1
  else
    OMP_NUM_THREADS=1 timeout 600 scripts/cluster-emu.sh run "$hosts" --rate "$rate" --slots $((P / hosts)) -- "$PWD/moe" "${args[@]}" >"$T/log" 2>&1
  fi || { echo "$name: the run failed: $(tail -c 300 "$T/log")" >&2; return; }
  local m; m=$(median_step "$out/log.jsonl")
  local dpn=$P cl=clusters/local.json
  [ "$hosts" -gt 0 ] && dpn=$((P / hosts))
  [ "$rate" = 1gbit ] && cl=clusters/local-1g.json
  local p; p=$(predict --model configs/bench-s.json --cluster "$cl" --devices "$P" --devices-per-node "$dpn" \
      --cores-per-rank "$(python3 -c "print($NCORE / $P)")" --micro-batch 2 --global-batch 16 --seq 256 --zero 0 \
      --recompute selective --ep-overlap layer "${sim[@]}")
  record "$name" "$m" "$p"
  [ -n "${KEEP_LOG:-}" ] && cp "$out/log.jsonl" "$KEEP_LOG"
}
train_run "P=2 one host, data parallel" 0 - 2 -- --layout tp=1,pp=1,ep=1
train_run "P=2 one host, expert parallel" 0 - 2 --ep 2 -- --layout tp=1,pp=1,ep=2 --a2a flat
train_run "P=2 one host, pipeline" 0 - 2 --pp 2 -- --layout tp=1,pp=2
train_run "P=4 one host, pipeline 2 x expert 2" 0 - 4 --pp 2 --ep 2 -- --layout tp=1,pp=2,ep=2 --a2a flat
train_run "P=4 one host, data parallel" 0 - 4 -- --layout tp=1,pp=1,ep=1
train_run "2 hosts at 10 Gbit/s, expert parallel" 2 10gbit 2 --ep 2 -- --layout tp=1,pp=1,ep=2 --a2a flat
train_run "2 hosts at 1 Gbit/s, data parallel" 2 1gbit 2 -- --layout tp=1,pp=1,ep=1
train_run "2 hosts at 1 Gbit/s, expert parallel" 2 1gbit 2 --ep 2 -- --layout tp=1,pp=1,ep=2 --a2a flat
train_run "4 hosts at 10 Gbit/s, pipeline 2 x expert 2" 4 10gbit 4 --pp 2 --ep 2 -- --layout tp=1,pp=2,ep=2 --a2a flat
train_run "4 hosts at 1 Gbit/s, expert parallel 4" 4 1gbit 4 --ep 4 -- --layout tp=1,pp=1,ep=4 --a2a hier
# 3. skewed load: a text of one repeated sentence, so that the router sends most tokens to the
# same few experts; EP 2, priced with the skew of its own log
for i in $(seq 1 20000); do echo "What is 2 + 2? 4."; done >"$T/same.txt"
DATA="$T/same.txt" KEEP_LOG="$T/skew.jsonl" train_run "P=2 one host, expert parallel, skewed load" 0 - 2 --ep 2 -- \
  --layout tp=1,pp=1,ep=2 --a2a flat --load 1
if [ -f "$T/skew.jsonl" ]; then
  s=$(./moe simulate --model configs/bench-s.json --cluster clusters/local.json --layout tp=1,pp=1,ep=2 --devices 2 --devices-per-node 2 \
      --cores-per-rank "$(python3 -c "print($NCORE / 2)")" --micro-batch 2 --global-batch 16 --seq 256 --zero 0 --ep-overlap layer \
      --a2a flat --load "$T/skew.jsonl" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["step_ms"])')
  echo "(the skewed run priced with --load from its log: $s ms)" >&2
  last=${rows[-1]}; m=$(echo "$last" | awk -F'|' '{print $3}')
  unset 'rows[-1]' 'errs[-1]'
  record "P=2 one host, expert parallel, skewed load (--load LOG)" "$m" "$s"
fi

echo "| run | measured ms | predicted ms | error |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
printf '%s\n' "${errs[@]}" | python3 -c "
import sys
e = sorted(abs(float(x)) for x in sys.stdin.read().split() if x != 'nan')
print('\n%d runs: median |error| %.1f%%, worst %.1f%%' % (len(e), e[len(e) // 2], e[-1]) if e else 'no runs')"
