#!/usr/bin/env bash
# moe simulate: every cluster file in clusters/ loads; the breakdown adds up to the step; the
# pipeline bubble of a uniform stack is the schedule's (S-1)/(mV); the published calibration
# point is reproduced and one prediction stays within its band; --search ranks layouts that
# fit by throughput; bad cluster files, logs and layouts are refused with one line naming the
# file or field. One PASS/FAIL line per check.
set -u
MOE=${MOE:-./moe}
T=$(mktemp -d /tmp/moe-sim.XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/check_lib.sh"
py() { /usr/bin/python3 -c "$@"; }

# every cluster file simulates the 718B plan; the terms add up to step_ms
for f in clusters/*.json; do
  tp=$(py "import json; print(min(8, json.load(open('$f'))['devices_per_node']))")   # (a CPU file's node is one device)
  if ! $MOE simulate --model configs/pangu-ultra-moe-718b.json --cluster "$f" --layout tp=$tp,pp=16,vpp=2,ep=32 \
       --devices 4096 --micro-batch 1 --global-batch 4096 --seq 4096 --json >"$T/one.json" 2>"$T/err"; then
    bad "$f simulates" "$(cat "$T/err")"; continue
  fi
  r=$(py "
import json; r = json.load(open('$T/one.json'))
need = ['step_ms', 'tokens_per_s', 'mfu', 'memory_gb', 'breakdown']
miss = [k for k in need if k not in r]
s = sum(r['breakdown'].values())
print('missing %s' % miss if miss else 'sum %.3f vs step %.3f' % (s, r['step_ms']) if abs(s - r['step_ms']) > 1e-3 * r['step_ms'] else
      'mfu %g' % r['mfu'] if not 0 < r['mfu'] < 1 else 'ok')")
  [ "$r" = ok ] && ok "$f: the 718B plan's terms add up to step_ms, mfu a fraction" || bad "$f" "$r"
done

# a uniform dense stack (the head's chunk aside) on S stages: bubble / busy = (S-1)/(m V)
cat >"$T/dense.json" <<'J'
{"hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 8, "intermediate_size": 2048,
 "moe_intermediate_size": 16, "n_routed_experts": 4, "num_experts_per_tok": 2, "first_k_dense_replace": 16,
 "vocab_size": 260, "max_position_embeddings": 4096, "tie_word_embeddings": true}
J
for l in "4 1 8" "4 2 8" "2 2 16"; do
  read -r S V m <<<"$l"
  $MOE simulate --model "$T/dense.json" --cluster clusters/a100-selene.json --layout "tp=1,pp=$S,vpp=$V" --devices "$S" \
    --micro-batch 1 --global-batch "$m" --seq 1024 --json >"$T/b.json" 2>"$T/err" || { bad "bubble S=$S V=$V" "$(cat "$T/err")"; continue; }
  r=$(py "
import json; r = json.load(open('$T/b.json')); want = ($S - 1) / ($m * $V)
print('ok %.4f' % r['bubble_fraction'] if abs(r['bubble_fraction'] - want) < 0.15 * want else 'bubble %.4f, the schedule %.4f' % (r['bubble_fraction'], want))")
  case $r in ok*) ok "pp=$S vpp=$V, $m micro-batches: bubble ${r#ok } near (S-1)/(mV)";; *) bad "bubble S=$S V=$V" "$r";; esac
done

# published: the calibration point reproduced, a prediction within 15%
pub() {   # NAME PUBLISHED_S TOLERANCE ARGS...
  local name=$1 want=$2 tol=$3; shift 3
  $MOE simulate "$@" --json >"$T/p.json" 2>"$T/err" || { bad "$name" "$(cat "$T/err")"; return; }
  r=$(py "
import json; s = json.load(open('$T/p.json'))['step_ms'] / 1e3
print('ok %.2f s' % s if abs(s - $want) <= $tol * $want else '%.2f s against %s s' % (s, '$want'))")
  case $r in ok*) ok "$name: ${r#ok } (published $want s)";; *) bad "$name" "$r";; esac
}
K="--cluster clusters/a100-selene.json --attention unfused --seq 2048"
pub "Korthikanti 22B selective (the A100 file's calibration point)" 1.10 0.01 --model configs/sim/korthikanti-22b.json $K \
  --layout tp=8,pp=1 --devices 8 --micro-batch 4 --global-batch 4 --recompute selective
pub "Korthikanti 175B selective, predicted" 13.75 0.15 --model configs/sim/korthikanti-175b.json $K \
  --layout tp=8,pp=8,vpp=3 --devices 64 --micro-batch 1 --global-batch 64 --recompute selective

# --search: layouts that fit, best first
if $MOE simulate --search --model configs/bench-s.json --cluster clusters/a100-selene.json --devices 16 --global-batch 64 \
     --seq 1024 --top 5 --json >"$T/s.json" 2>"$T/err"; then
  r=$(py "
import json; s = json.load(open('$T/s.json')); t = [x['tokens_per_s'] for x in s]
print('ok %d' % len(s) if s and t == sorted(t, reverse=True) and all(x['fits'] for x in s) and all(x['devices'] == 16 for x in s) else 'bad %s' % s)")
  case $r in ok*) ok "--search: ${r#ok } layouts of 16 devices, all fit, fastest first";; *) bad "--search" "$r";; esac
else bad "--search" "$(cat "$T/err")"; fi

# bad input
A=(--model configs/bench-s.json --layout tp=1,pp=2,ep=4 --devices 8 --micro-batch 1 --global-batch 16 --seq 256)
cp clusters/a100-selene.json "$T/good.json"
edit() { py "import json, sys; d = json.load(open('$T/good.json')); $2; json.dump(d, open('$T/$1', 'w'))"; }
# file | the edit (Python on d) | the check's name | what the message says
while IFS='|' read -r f e name msg; do
  edit "$f" "$e"
  expect_fail "cluster: $name" "$f: $msg" $MOE simulate "${A[@]}" --cluster "$T/$f"
done <<'CASES'
miss.json|del d['efficiency']['gemm_max']|a missing field|"efficiency.gemm_max" is missing
unk.json|d['intra_node']['bw_gb'] = 3|an unknown key|unknown key "intra_node.bw_gb"
neg.json|d['inter_node']['bw_gbs'] = -25|a negative bandwidth|"inter_node.bw_gbs" must be a positive number
frac.json|d['efficiency']['memory'] = 1.5|an efficiency above 1|the efficiencies
dtype.json|d['dtype'] = 'int4'|an unknown dtype|"dtype" must be
str.json|d['devices'] = '8'|a number as a string|"devices" must be a positive number
a2a.json|d['inter_node']['a2a_bw_gbs'] = 5|an all-to-all rate without its latency|"a2a_bw_gbs" and "a2a_latency_us" go together
sync.json|d['efficiency']['sync'] = 1.5|a jitter of 1 or more|the efficiencies
decay.json|d['efficiency']['sync_decay'] = 0.2|a jitter's decay without its interval|"efficiency.sync_decay" needs "efficiency.sync_ms"
decay2.json|d['efficiency'].update(sync_ms=5, sync_decay=1.5)|a jitter's decay above 1|"efficiency.sync_decay" is an exponent in [0, 1]
CASES
head -c 200 clusters/a100-selene.json >"$T/cut.json"
expect_fail "cluster: a truncated file" 'cut.json: not valid JSON' $MOE simulate "${A[@]}" --cluster "$T/cut.json"
expect_fail "cluster: a missing file" 'nope.json: cannot open' $MOE simulate "${A[@]}" --cluster "$T/nope.json"
C=(--cluster clusters/a100-selene.json)
expect_fail "layout: ep not dividing the experts" 'ep=5 must divide the model' $MOE simulate "${A[@]/ep=4/ep=5}" "${C[@]}"
expect_fail "layout: an unknown key" 'unknown key "xp"' $MOE simulate "${A[@]/ep=4/xp=4}" "${C[@]}"
expect_fail "layout: vpp without pp" 'vpp=2 needs pp above 1' $MOE simulate "${A[@]/pp=2,ep=4/pp=1,vpp=2}" "${C[@]}"
expect_fail "layout: devices not a multiple of tp x pp" '--devices 7 is not a multiple' $MOE simulate "${A[@]}" "${C[@]}" --devices 7
expect_fail "layout: global batch not a multiple" '--global-batch 15 must be a multiple' $MOE simulate "${A[@]}" "${C[@]}" --global-batch 15
expect_fail "layout: more chunks than layers" 'chunks for 8 layers' $MOE simulate "${A[@]/pp=2,ep=4/pp=8,vpp=2}" "${C[@]}"
expect_fail "--pp-layers: a wrong total" '--pp-layers counts 7 layers' $MOE simulate "${A[@]}" "${C[@]}" --pp-layers 3,4
printf '{"step":1,"expert_load":[[1,2,3]]}\n' >"$T/l3.jsonl"
expect_fail "--load: experts not divisible by ep" 'l3.jsonl:1: 3 experts a layer cannot be spread over ep=4' $MOE simulate "${A[@]}" "${C[@]}" --load "$T/l3.jsonl"
printf '{"step":1,"loss":2}\n' >"$T/none.jsonl"
expect_fail "--load: a log without expert_load" 'none.jsonl: no line logs "expert_load"' $MOE simulate "${A[@]}" "${C[@]}" --load "$T/none.jsonl"
printf '{"step":1,"expert_load":[[1,2,-3,4]]}\n' >"$T/negl.jsonl"
expect_fail "--load: a negative count" 'negl.jsonl:1: "expert_load" holds a count' $MOE simulate "${A[@]}" "${C[@]}" --load "$T/negl.jsonl"
expect_fail "--load: a skew under 1" 'must be at least 1' $MOE simulate "${A[@]}" "${C[@]}" --load 0.5

# --load from a log: 4 experts on ep=2, device loads 30 and 10 (mean 20): skew 1.5, costs time
printf '{"step":1,"expert_load":[[10,20,5,5]]}\n' >"$T/skew.jsonl"
B=(--model configs/bench-s.json --layout tp=1,pp=1,ep=2 --devices 2 --micro-batch 4 --global-batch 8 --seq 512 --json "${C[@]}")
if $MOE simulate "${B[@]}" --load "$T/skew.jsonl" >"$T/s1.json" 2>"$T/err" && $MOE simulate "${B[@]}" --load 1.5 >"$T/s2.json" && $MOE simulate "${B[@]}" >"$T/s0.json"; then
  r=$(py "
import json; a, b, c = (json.load(open('$T/%s.json' % n)) for n in ('s1', 's2', 's0'))
print('ok' if a['step_ms'] == b['step_ms'] and a['step_ms'] > c['step_ms'] and a['breakdown']['imbalance'] > 0 else 'log %s, 1.5 %s, balanced %s' % (a['step_ms'], b['step_ms'], c['step_ms']))")
  [ "$r" = ok ] && ok "--load LOG: a 30/10 device split is skew 1.5, priced as imbalance" || bad "--load LOG" "$r"
else bad "--load LOG" "$(cat "$T/err")"; fi

# the experts' all-to-all at its own rates when the file has them; the wait at every exchange
# (sync) as ep_sync, for expert parallelism only, larger for more devices in the group
edit fast.json "d['intra_node'].update(a2a_bw_gbs=10 * d['intra_node']['bw_gbs'], a2a_latency_us=0)"
edit jit.json "d['efficiency']['sync'] = 0.1"
E=(--model configs/bench-s.json --layout tp=1,pp=1,ep=2 --devices 8 --micro-batch 4 --global-batch 32 --seq 512 --ep-overlap off --json)
if $MOE simulate "${E[@]}" --cluster "$T/good.json" >"$T/a0.json" 2>"$T/err" && $MOE simulate "${E[@]}" --cluster "$T/fast.json" >"$T/a1.json" &&
   $MOE simulate "${E[@]}" --cluster "$T/jit.json" >"$T/j2.json" && $MOE simulate "${E[@]/ep=2/ep=8}" --cluster "$T/jit.json" >"$T/j8.json" &&
   $MOE simulate "${E[@]/ep=2/ep=1}" --cluster "$T/jit.json" >"$T/j1.json"; then
  r=$(py "
import json; a0, a1, j1, j2, j8 = (json.load(open('$T/%s.json' % n)) for n in ('a0', 'a1', 'j1', 'j2', 'j8'))
b = lambda r, k: r['breakdown'][k]
comp = lambda r: sum(v for k, v in r['breakdown'].items() if k not in ('ep_all_to_all', 'ep_sync', 'dp_reduce', 'dp_sync', 'optimizer', 'step_overhead', 'bubble'))
e0, e1 = b(a0, 'ep_all_to_all'), b(a1, 'ep_all_to_all')
# ep=2: 0.1 of the layers' work (the head's aside); ep=8: 1.4236/0.5642 times that share
f2, f8 = b(j2, 'ep_sync') / comp(j2), b(j8, 'ep_sync') / comp(j8)
print('ok' if e1 < 0.2 * e0 and b(a0, 'ep_sync') == 0 and b(j1, 'ep_sync') == 0 and 0.07 < f2 < 0.1 and abs(f8 / f2 - 1.4236 / 0.5642) < 0.15
      else 'all-to-all %.1f vs %.1f ms; sync shares %.4f (ep 2), %.4f (ep 8), ep=1 %.1f ms' % (e1, e0, f2, f8, b(j1, 'ep_sync')))")
  [ "$r" = ok ] && ok "a2a_bw_gbs prices the experts' exchange; sync is ep_sync, scaled by the largest of ep draws" || bad "a2a rates and ep_sync" "$r"
else bad "a2a rates and ep_sync" "$(cat "$T/err")"; fi

# data parallelism: the replicas meet only at the gradient sums, where each waits for the
# slowest one's jitter over the whole step (dp_sync: none for the ranks of one expert-parallel
# group, more for more replicas, less when the jitter falls with the interval); the sum
# started during the backward pass costs comm_share of the work it hides under
ledit() { py "import json; d = json.load(open('clusters/local.json')); d['efficiency'].update($2); json.dump(d, open('$T/$1', 'w'))"; }
ledit dsy.json "sync=0.1, sync_decay=0"
ledit dsy2.json "sync=0.1, sync_ms=1, sync_decay=0.5"
ledit dcs.json "comm_share=0"
ledit dc1.json "comm_share=0.4"
D=(--model configs/bench-s.json --layout tp=1,pp=1 --micro-batch 2 --seq 256 --zero 0 --devices-per-node 2 --json)
if $MOE simulate "${D[@]}" --devices 2 --global-batch 16 --cluster "$T/dsy.json" >"$T/d2.json" 2>"$T/err" &&
   $MOE simulate "${D[@]}" --devices 8 --global-batch 64 --cluster "$T/dsy.json" >"$T/d8.json" &&
   $MOE simulate "${D[@]}" --devices 2 --global-batch 16 --cluster "$T/dsy2.json" >"$T/dd.json" &&
   $MOE simulate "${D[@]/tp=1,pp=1/tp=1,pp=1,ep=2}" --devices 2 --global-batch 16 --cluster "$T/dsy.json" >"$T/de.json" &&
   $MOE simulate "${D[@]}" --devices 2 --global-batch 16 --cluster "$T/dcs.json" >"$T/dc0.json" &&
   $MOE simulate "${D[@]}" --devices 2 --global-batch 16 --cluster "$T/dc1.json" >"$T/dc1.json.out"; then
  r=$(py "
import json; d2, d8, dd, de, c0, c1 = (json.load(open('$T/%s' % n)) for n in ('d2.json', 'd8.json', 'dd.json', 'de.json', 'dc0.json', 'dc1.json.out'))
b = lambda r, k: r['breakdown'][k]
w = b(d2, 'dp_sync') / 0.1   # (the step's work in ms: ep=1, one replica per device)
cs = 0.4
ok = (w > 0 and abs(b(d8, 'dp_sync') / b(d2, 'dp_sync') - 1.4236 / 0.5642) < 0.01 and b(de, 'dp_sync') == 0
      and abs(b(dd, 'dp_sync') / b(d2, 'dp_sync') - w ** -0.5) < 1e-3 and b(c0, 'dp_reduce') == 0
      and abs(b(c1, 'dp_reduce') - c1['dp_reduce_total_ms'] * cs / (1 - cs)) < 1e-3 * c1['dp_reduce_total_ms'])
print('ok' if ok else 'dp_sync %.1f (2), %.1f (8), %.1f (decay), %.1f (ep=2); dp_reduce %.1f (comm_share 0), %.1f of %.1f' % (
      b(d2, 'dp_sync'), b(d8, 'dp_sync'), b(dd, 'dp_sync'), b(de, 'dp_sync'), b(c0, 'dp_reduce'), b(c1, 'dp_reduce'), c1['dp_reduce_total_ms']))")
  [ "$r" = ok ] && ok "dp_sync: the replicas' jitter over the step, by their count and the decay; a hidden sum costs comm_share" || bad "dp_sync and the hidden sum" "$r"
else bad "dp_sync and the hidden sum" "$(cat "$T/err")"; fi

# --tp-overlap (MC2): the tensor-parallel collectives beside their GEMMs cost less, not nothing
P=(--model configs/sim/korthikanti-22b.json --cluster clusters/a100-selene.json --layout tp=8,pp=1 --devices 8 --micro-batch 4
   --global-batch 4 --seq 2048 --json)
if $MOE simulate "${P[@]}" >"$T/t0.json" 2>"$T/err" && $MOE simulate "${P[@]}" --tp-overlap on >"$T/t1.json" 2>>"$T/err"; then
  r=$(py "
import json; a, b = (json.load(open('$T/%s.json' % n))['breakdown']['tp'] for n in ('t0', 't1'))
print('ok %.1f -> %.1f ms' % (a, b) if 0 < b < 0.5 * a else 'tp %.1f ms, with --tp-overlap %.1f ms' % (a, b))")
  case $r in ok*) ok "--tp-overlap on: the tp term ${r#ok }";; *) bad "--tp-overlap" "$r";; esac
else bad "--tp-overlap" "$(cat "$T/err")"; fi
expect_fail "--tp-overlap: a bad value" '--tp-overlap' $MOE simulate "${P[@]}" --tp-overlap maybe

# --idle-yields: ranks that share cores and yield while they wait lose no idle time at two
# ranks a core (the bubble goes) but the share idle_kept they still take, and all of it at a
# core each (nothing changes)
py "import json; d = json.load(open('clusters/local.json')); d['efficiency']['idle_kept'] = 0; json.dump(d, open('$T/yk0.json', 'w'))
d['efficiency']['idle_kept'] = 0.4; json.dump(d, open('$T/yk4.json', 'w'))"
Y=(--model configs/bench-s.json --layout tp=1,pp=2 --devices 4 --devices-per-node 4 --micro-batch 2 --global-batch 16 --seq 256 --json)
if $MOE simulate "${Y[@]}" --cluster "$T/yk0.json" --cores-per-rank 0.5 >"$T/y0.json" 2>"$T/err" &&
   $MOE simulate "${Y[@]}" --cluster "$T/yk0.json" --cores-per-rank 0.5 --idle-yields on >"$T/y1.json" &&
   $MOE simulate "${Y[@]}" --cluster "$T/yk4.json" --cores-per-rank 0.5 --idle-yields on >"$T/y2.json" &&
   $MOE simulate "${Y[@]}" --cluster "$T/yk4.json" --cores-per-rank 1 >"$T/y3.json" &&
   $MOE simulate "${Y[@]}" --cluster "$T/yk4.json" --cores-per-rank 1 --idle-yields on >"$T/y4.json"; then
  r=$(py "
import json; y = [json.load(open('$T/y%d.json' % i))['breakdown']['bubble'] for i in range(5)]
print('ok' if y[0] > 0 and y[1] == 0 and abs(y[2] - 0.4 * y[0]) < 1e-6 * y[0] and y[3] > 0 and y[4] == y[3] else 'bubbles %s' % y)")
  [ "$r" = ok ] && ok "--idle-yields: at two ranks a core the bubble is idle_kept of itself, at one all of it" || bad "--idle-yields" "$r"
else bad "--idle-yields" "$(cat "$T/err")"; fi

# moe calibrate's link arguments
for v in "1,2,3" "1" "-1,2" "1,2,0,5" "x,1"; do
  expect_fail "calibrate: --intra $v" "--intra must be BW_GBS,LAT_US" $MOE calibrate --out "$T/c.json" --intra "$v" --inter 1,2 --seconds 1
done
for v in "1" "0.1,5" "0.1,0,0.2" "0.1,5,1.5" "0.1,5,0.2,3" "0.1,x,0.2"; do
  expect_fail "calibrate: --sync $v" "--sync must be SYNC[,SYNC_MS,SYNC_DECAY]" $MOE calibrate --out "$T/c.json" --intra 1,2 --inter 1,2 --sync "$v"
done

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
