#!/usr/bin/env bash
# moe simulate against real runs of this machine (issue 16): each run below is measured, then
# predicted from cluster files that scripts/calibrate.sh writes at the start of the pass
# (microbenchmarks of moe.c's kernels and of the links, none of these runs; FROZEN=1 takes
# the committed clusters/local.json and local-1g.json instead). Single-process moe bench (its best step), and
# moe train under mpirun (the median step_ms of steps 3..N of its log) with data, expert and
# pipeline parallelism, on one host and on 2 and 4 emulated hosts at 10 and 1 Gbit/s (the
# expert-parallel ones priced with the expert load of the data-parallel run's log), and a
# run whose expert load is skewed (priced with --load from its own log).
# The machine is shared and its speed drifts by 20% and more over minutes, so the whole list
# runs PASSES times, each pass calibrated afresh. Noise only ever slows a run or a
# microbenchmark down, so each run keeps its fastest measurement and its fastest prediction
# (the one from the least disturbed calibration): the undisturbed machine on both sides.
# Four ranks on one host outnumber its cores, and mpirun --oversubscribe makes them yield
# while they wait: those runs are priced with --idle-yields on.
# Prints a markdown table and the median and worst absolute error.
#   bench/sim_local.sh [STEPS] [PASSES]     (train steps a run, default 8; passes, default 2)
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-8}
PASSES=${2:-2}
make -s moe
T=$(mktemp -d /tmp/moe-simlocal.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
NCORE=$(nproc)
cat ../shared/data/mathematics_dataset/train/*.txt | head -c 4000000 >"$T/text.txt"
names=()
declare -A meas pred
median_step() {   # the median step_ms of steps 3.. of a log
  python3 -c "
import json, sys
s = sorted(json.loads(l)['step_ms'] for l in open('$1') if '\"step_ms\"' in l and json.loads(l).get('step', 0) >= 3)
print(s[len(s) // 2] if s else 'nan')"
}
predict() {   # ARGS...: moe simulate's step_ms
  ./moe simulate "$@" --json 2>"$T/err" | python3 -c 'import json, sys; print(json.load(sys.stdin)["step_ms"])' || echo "nan ($(cat "$T/err"))"
}
record() {   # NAME MEASURED PREDICTED: keeps the fastest measurement and the fastest prediction
  [ -n "${meas[$1]:-}" ] || names+=("$1")
  if [ -z "${meas[$1]:-}" ] || python3 -c "import sys; sys.exit(0 if $2 < ${meas[$1]} else 1)" 2>/dev/null; then meas[$1]=$2; fi
  if [ -z "${pred[$1]:-}" ] || python3 -c "import sys; sys.exit(0 if $3 < ${pred[$1]} else 1)" 2>/dev/null; then pred[$1]=$3; fi
  echo "pass $pass, $1: measured $2 ms, predicted $3 ms" >&2
}

# moe train under mpirun: P ranks of one thread (or less: 4 ranks share 2 cores), predicted
# from this pass's cluster files ($CL)
last_m=nan
train_run() {   # NAME HOSTS(0: one host) RATE P FLAGS... -- SIMFLAGS...
  local name=$1 hosts=$2 rate=$3 P=$4; shift 4
  local flags=() sim=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift; sim=("$@")
  local out="$T/$(echo "$name" | tr -c 'a-z0-9' _)"
  rm -rf "$out"   # (a run of the previous pass)
  local args=(train --model configs/bench-s.json --data "${DATA:-$T/text.txt}" --format text --out "$out" --batch 16 --micro-batch 2 --seq 256
              --steps "$STEPS" --quiet --seed 5 "${flags[@]}")
  if [ "$hosts" -eq 0 ]; then
    OMP_NUM_THREADS=1 timeout 600 mpirun --oversubscribe -np "$P" -x OMP_NUM_THREADS ./moe "${args[@]}" >"$T/log" 2>&1
  else
    OMP_NUM_THREADS=1 timeout 600 scripts/cluster-emu.sh run "$hosts" --rate "$rate" --slots $((P / hosts)) -- "$PWD/moe" "${args[@]}" >"$T/log" 2>&1
  fi || { echo "$name: the run failed: $(tail -c 300 "$T/log")" >&2; return; }
  local m; m=$(median_step "$out/log.jsonl")
  local dpn=$P cl=$CL/local.json yields=off
  [ "$hosts" -gt 0 ] && dpn=$((P / hosts))
  [ "$hosts" -eq 0 ] && [ "$P" -gt "$NCORE" ] && yields=on
  [ "$rate" = 1gbit ] && cl=$CL/local-1g.json
  local p; p=$(predict --model configs/bench-s.json --cluster "$cl" --devices "$P" --devices-per-node "$dpn" \
      --cores-per-rank "$(python3 -c "print($NCORE / $P)")" --micro-batch 2 --global-batch 16 --seq 256 --zero 0 \
      --recompute selective --ep-overlap layer --idle-yields "$yields" "${sim[@]}")
  last_m=$m
  [ -n "${SAVE_LOG:-}" ] && cp "$out/log.jsonl" "$SAVE_LOG"
  [ -n "${KEEP_LOG:-}" ] && { cp "$out/log.jsonl" "$KEEP_LOG"; return 0; }   # (priced by the caller)
  record "$name" "$m" "$p"
}
for pass in $(seq 1 "$PASSES"); do
CL=clusters
if [ -z "${FROZEN:-}" ]; then
  CL=$T/cl$pass
  OUT=$CL scripts/calibrate.sh 8 >"$T/cal.out" 2>&1 || { echo "calibrate failed: $(tail -3 "$T/cal.out")" >&2; exit 1; }
  echo "pass $pass: $(grep 'peak' "$T/cal.out"); links $(grep -h 'inter_node\|intra_node' "$T/cal.out" | tr '\n' ' ')" >&2
fi
# 1. single process, all cores: moe bench's best step
for run in "bench-s 8 256" "bench-s 16 256" "bench-fine 8 256" "bench-fine 16 256" "pangu-tiny 8 256" "pangu-tiny 16 256"; do
  read -r cfg B S <<<"$run"
  m=$(./moe bench --model "configs/$cfg.json" --batch "$B" --seq "$S" --steps 6 --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["step_ms"])')
  p=$(predict --model "configs/$cfg.json" --cluster "$CL/local.json" --layout tp=1,pp=1 --devices 1 --micro-batch "$B" \
      --global-batch "$B" --seq "$S" --recompute selective --zero 0)
  record "moe bench $cfg, batch $B x $S" "$m" "$p"
done

# 2. moe train under mpirun (train_run above). The expert-parallel runs are priced with the
# expert load the data-parallel run (the first) routed: the same model, data and seed, so
# the load a router of this model gives this text (split over ep devices by --load)
rm -f "$T/dp.jsonl"
SAVE_LOG="$T/dp.jsonl" train_run "P=2 one host, data parallel" 0 - 2 -- --layout tp=1,pp=1,ep=1
L=(--load "$T/dp.jsonl")
train_run "P=2 one host, expert parallel" 0 - 2 --ep 2 -- --layout tp=1,pp=1,ep=2 --a2a flat "${L[@]}"
train_run "P=2 one host, pipeline" 0 - 2 --pp 2 -- --layout tp=1,pp=2
train_run "P=4 one host, pipeline 2 x expert 2" 0 - 4 --pp 2 --ep 2 -- --layout tp=1,pp=2,ep=2 --a2a flat "${L[@]}"
train_run "P=4 one host, data parallel" 0 - 4 -- --layout tp=1,pp=1,ep=1
train_run "2 hosts at 10 Gbit/s, expert parallel" 2 10gbit 2 --ep 2 -- --layout tp=1,pp=1,ep=2 --a2a flat "${L[@]}"
train_run "2 hosts at 1 Gbit/s, data parallel" 2 1gbit 2 -- --layout tp=1,pp=1,ep=1
train_run "2 hosts at 1 Gbit/s, expert parallel" 2 1gbit 2 --ep 2 -- --layout tp=1,pp=1,ep=2 --a2a flat "${L[@]}"
train_run "4 hosts at 10 Gbit/s, pipeline 2 x expert 2" 4 10gbit 4 --pp 2 --ep 2 -- --layout tp=1,pp=2,ep=2 --a2a flat "${L[@]}"
train_run "4 hosts at 1 Gbit/s, expert parallel 4" 4 1gbit 4 --ep 4 -- --layout tp=1,pp=1,ep=4 --a2a hier "${L[@]}"

# 3. skewed load: a text of one repeated sentence, so that the router sends most tokens to the
# same few experts; EP 2, priced with the skew of its own log
[ -f "$T/same.txt" ] || for i in $(seq 1 20000); do echo "What is 2 + 2? 4."; done >"$T/same.txt"
rm -f "$T/skew.jsonl"
DATA="$T/same.txt" KEEP_LOG="$T/skew.jsonl" train_run "P=2 one host, expert parallel, skewed load" 0 - 2 --ep 2 -- \
  --layout tp=1,pp=1,ep=2 --a2a flat --load 1
if [ -f "$T/skew.jsonl" ]; then   # (the log of this pass's run: the load it routed)
  s=$(./moe simulate --model configs/bench-s.json --cluster "$CL/local.json" --layout tp=1,pp=1,ep=2 --devices 2 --devices-per-node 2 \
      --cores-per-rank "$(python3 -c "print($NCORE / 2)")" --micro-batch 2 --global-batch 16 --seq 256 --zero 0 --ep-overlap layer \
      --a2a flat --load "$T/skew.jsonl" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["step_ms"])')
  echo "(the skewed run priced with --load from its log: $s ms)" >&2
  record "P=2 one host, expert parallel, skewed load (--load LOG)" "$last_m" "$s"
fi
done

echo "| run | measured ms (fastest of $PASSES) | predicted ms (fastest of $PASSES) | error |"
echo "|---|---|---|---|"
errs=()
for n in "${names[@]}"; do
  e=$(python3 -c "print('%.1f' % (100 * (${pred[$n]} - ${meas[$n]}) / ${meas[$n]}))" 2>/dev/null || echo nan)
  echo "| $n | $(printf %.1f "${meas[$n]}") | $(printf %.1f "${pred[$n]}") | $e% |"
  errs+=("$e")
done
printf '%s\n' "${errs[@]}" | python3 -c "
import sys
e = sorted(abs(float(x)) for x in sys.stdin.read().split() if x != 'nan')
print('\n%d runs: median |error| %.1f%%, worst %.1f%%' % (len(e), e[len(e) // 2], e[-1]) if e else 'no runs')"
