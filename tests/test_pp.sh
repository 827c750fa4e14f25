#!/usr/bin/env bash
# Pipeline parallelism under Open MPI on this one machine (--oversubscribe): --pp S = 2 and 4,
# --vpp V = 1 and 2, with and without --ep 2 and data parallelism, log the single-process
# losses of the same global batch over 10 steps (relative 1e-6 in exact storage, 1e-4 in the
# default bf16 storage; also with --zero 1 inside the stages) on a config that mixes a dense layer with MoE ones and has an MTP
# module (and a tied one); a pipelined checkpoint resumes on one process and at another S; a
# killed rank ends the job non-zero within 30 s and leaves the last checkpoint whole;
# impossible layouts are refused with one line. Under --ep with --overlap on the steady
# forwards and backwards run as pairs (SCHED_PAIR; --micro-batch 1 makes 8 pass pairs a step).
# One PASS/FAIL line per check.
set -u
MOE=${MOE:-./moe}
MOE=$(readlink -f "$MOE")
T=$(mktemp -d /tmp/moe-pp.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/mpi_lib.sh"
run() { timeout -s KILL 120 mpirun -np "$1" --oversubscribe -x OMP_NUM_THREADS=1 "${@:2}"; }   # (bounded: a hang fails the suite)

# 4 layers (the first dense), 4 experts top-2 + a shared one, sigmoid scores, sequence aux
# loss, the bias update, one MTP module
cat >"$T/c.json" <<'J'
{"vocab_size": 260, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
 "intermediate_size": 48, "moe_intermediate_size": 16, "n_routed_experts": 4, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
 "n_shared_experts": 1, "max_position_embeddings": 128, "scoring_func": "sigmoid", "aux_loss_alpha": 0.01,
 "aux_scope": "sequence", "bias_update_speed": 0.01, "num_mtp_layers": 1}
J
sed 's/"num_mtp_layers": 1/"num_mtp_layers": 0, "tie_word_embeddings": true/' "$T/c.json" >"$T/tied.json"
$MOE gen-math --n 400 --seed 3 --out "$T/qa.txt" || { echo "FAIL gen-math"; exit 1; }
X="--recompute none --act-dtype f32"
F="--data $T/qa.txt --batch 8 --micro-batch 2 --seq 64 --quiet --seed 11 --steps 10"


OMP_NUM_THREADS=1 $MOE train --model "$T/c.json" --out "$T/one" $F $X || { echo "FAIL single-process run"; exit 1; }
OMP_NUM_THREADS=1 $MOE train --model "$T/c.json" --out "$T/one_bf" $F || { echo "FAIL single-process run (default storage)"; exit 1; }
OMP_NUM_THREADS=1 $MOE train --model "$T/tied.json" --out "$T/one_tied" $F $X || { echo "FAIL single-process run (tied)"; exit 1; }
# P ranks, the layout flags, the storage
for l in "2 --pp 2" "2 --pp 2 --vpp 2" "2 --pp 2 --vpp 2 --overlap off" "2 --pp 2 --pp-layers 1,3" "4 --pp 4" "4 --pp 2 --vpp 2 --ep 2" "4 --pp 2 --ep 2" "4 --pp 2" "4 --pp 2 --zero 1" "8 --pp 4 --vpp 1 --ep 2" "4 --pp 2 --vpp 2 --ep 2 --micro-batch 1"; do
  read -r np flags <<<"$l"
  name=p$np$(echo "$flags" | tr -d " -")
  run "$np" $MOE train --model "$T/c.json" --out "$T/$name" $F $X $flags >"$T/$name.log" 2>&1 \
    || { bad "P $np $flags" "exit $?: $(tail -c 300 "$T/$name.log")"; continue; }
  same_losses "P $np $flags: the single-process losses, 10 steps, exact storage (dense + MoE + MTP)" "$T/one" "$T/$name" 10 1e-6
done
run 4 $MOE train --model "$T/c.json" --out "$T/bf" $F --pp 2 --vpp 2 --ep 2 >"$T/bf.log" 2>&1 \
  && same_losses "P 4 --pp 2 --vpp 2 --ep 2: the single-process losses in the default bf16 storage" "$T/one_bf" "$T/bf" 10 1e-4 \
  || bad "default storage" "$(tail -c 300 "$T/bf.log")"
run 2 $MOE train --model "$T/tied.json" --out "$T/tied" $F $X --pp 2 --vpp 2 >"$T/tied.log" 2>&1 \
  && same_losses "P 2 --pp 2 --vpp 2, tied embedding (both ends hold it): the single-process losses" "$T/one_tied" "$T/tied" 10 1e-6 \
  || bad "tied embedding" "$(tail -c 300 "$T/tied.log")"
# the eval loss through the stages (forward passes only, the last stage's loss)
$MOE gen-math --n 100 --seed 4 --out "$T/ev.txt" >/dev/null
E="--eval-data $T/ev.txt --eval-every 2 --steps 4"
OMP_NUM_THREADS=1 $MOE train --model "$T/c.json" --out "$T/ev1" $F $X $E >/dev/null 2>&1
run 4 $MOE train --model "$T/c.json" --out "$T/evp" $F $X $E --pp 2 --vpp 2 --ep 2 >"$T/evp.log" 2>&1 \
  || bad "--eval-data under --pp" "$(tail -c 300 "$T/evp.log")"
r=$(paste <(grep -o '"eval_loss":[0-9.e-]*' "$T/ev1/log.jsonl" | cut -d: -f2) <(grep -o '"eval_loss":[0-9.e-]*' "$T/evp/log.jsonl" | cut -d: -f2) |
    awk '{ d = $1 - $2; if (d < 0) d = -d; if (d / $1 > m) m = d / $1; c++ } END { if (c != 2) print "lines " c; else printf "%s %.1e\n", m < 1e-6 ? "ok" : "bad", m }')
case $r in ok*) ok "--eval-data under --pp 2 --vpp 2 --ep 2: the single-process eval loss (max rel ${r#ok })";; *) bad "--eval-data under --pp" "$r";; esac

python3 -c "
import json, sys
r = [json.loads(l) for l in open('$T/p4pp4/log.jsonl')]
sys.exit(0 if r and all(0 <= x['pp_transit_ms'] <= x['bubble_ms'] + 1e-6 and x['pp_exposed_ms'] >= 0 for x in r) else 1)" \
  && ok "the log has bubble_ms, of it pp_transit_ms (the data on its way), and pp_exposed_ms" \
  || bad "bubble_ms in the log" "$(head -c 300 "$T/p4pp4/log.jsonl")"

# a pipelined checkpoint is one standard checkpoint: it resumes on one process and at another S
OMP_NUM_THREADS=1 $MOE train --model "$T/c.json" --out "$T/one20" ${F/--steps 10/--steps 14} $X >/dev/null 2>&1
cp -r "$T/p4pp4" "$T/r1"
OMP_NUM_THREADS=1 $MOE train --resume "$T/r1" --out "$T/r1" ${F/--steps 10/--steps 14} $X >"$T/r1.log" 2>&1 \
  && same_losses "an --pp 4 checkpoint resumed on one process continues the single-process run" "$T/one20" "$T/r1" 14 1e-6 \
  || bad "resume on one process" "$(tail -c 300 "$T/r1.log")"
cp -r "$T/p4pp2vpp2ep2" "$T/r2"
run 2 $MOE train --resume "$T/r2" --out "$T/r2" ${F/--steps 10/--steps 14} $X --pp 2 >"$T/r2.log" 2>&1 \
  && same_losses "an --pp 2 --vpp 2 --ep 2 checkpoint resumed at --pp 2 (P 2) continues it" "$T/one20" "$T/r2" 14 1e-6 \
  || bad "resume at another S" "$(tail -c 300 "$T/r2.log")"

cp -r "$T/p4pp2zero1" "$T/r3"
OMP_NUM_THREADS=1 $MOE train --resume "$T/r3" --out "$T/r3" ${F/--steps 10/--steps 14} $X >"$T/r3.log" 2>&1 \
  && same_losses "an --pp 2 --zero 1 checkpoint (each stage's moments gathered) resumed on one process continues it" "$T/one20" "$T/r3" 14 1e-6 \
  || bad "resume of a --zero 1 pipelined checkpoint" "$(tail -c 300 "$T/r3.log")"

# a killed rank: the job ends non-zero within 30 s; the checkpoint before it is whole
timeout -s KILL 60 mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS=1 $MOE train --model "$T/c.json" $F $X \
  --steps 1000000 --ckpt-every 2 --pp 2 --out "$T/kill" >"$T/kill.log" 2>&1 &
mp=$!
for _ in $(seq 100); do [ -f "$T/kill/model.safetensors" ] && break; sleep 0.1; done
sleep 1
victim=""
for p in $(pgrep -f -- "--out $T/kill\$"); do [ "$(cat /proc/$p/comm 2>/dev/null)" = moe ] && victim=$p; done
t0=$(date +%s.%N)
[ -n "$victim" ] && kill -9 "$victim"
wait $mp; rc=$?
secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
if [ -n "$victim" ] && [ $rc -ne 0 ] && awk -v s="$secs" 'BEGIN { exit !(s < 30) }'; then ok "a pipeline stage's rank killed: mpirun exits $rc after $secs s"
else bad "killed rank" "victim '$victim' rc $rc after $secs s: $(tail -3 "$T/kill.log")"; fi
OMP_NUM_THREADS=1 $MOE eval --ckpt "$T/kill" --data "$T/qa.txt" --limit 5 --json >/dev/null 2>"$T/err" \
  && ok "the last checkpoint before the kill is whole" || bad "checkpoint after the kill" "$(cat "$T/err")"

# impossible layouts: one line each, nothing written
expect_fail() {   # NAME PATTERN NP FLAGS...
  local name=$1 pat=$2 np=$3; shift 3
  run "$np" $MOE train --model "$T/c.json" --out "$T/bad" $F "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ $rc -ne 0 ] && grep -qF -- "$pat" "$T/err" && [ ! -e "$T/bad/model.safetensors" ]; then ok "$name ($(grep -m1 -F -- "$pat" "$T/err"))"
  else bad "$name" "rc $rc: $(head -c 300 "$T/err")"; fi
}
expect_fail "more chunks than layers" "--pp 2 x --vpp 4 = 8 chunks for 4 layers" 2 --pp 2 --vpp 4
expect_fail "--pp that does not divide the ranks" "--pp 2 must divide the number of ranks 3" 3 --pp 2
expect_fail "--ep that does not divide a stage" "--ep 2 must divide the ranks of a pipeline stage" 2 --pp 2 --ep 2
expect_fail "--vpp with micro-batches not a multiple of --pp" "to be a multiple of --pp 2" 2 --pp 2 --vpp 2 --micro-batch 8
expect_fail "--vpp without --pp" "--vpp 2 needs pipeline stages (--pp)" 1 --vpp 2
expect_fail "--pp-layers not adding up to the layers" "--pp-layers counts 5 layers, the model has 4" 2 --pp 2 --pp-layers 2,3

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
