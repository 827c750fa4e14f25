#!/usr/bin/env bash
# Chaos test of crash-safe checkpoints (issue #12; not part of `make test`).
#
# Trains configs/math-tiny.json on the DeepMind numbers__place_value train split with a
# checkpoint every step, and kills it with SIGKILL at --kills seeded moments. After each
# kill: (a) the checkpoint directory must load (`moe eval --ckpt DIR --limit 5 --json`, and
# train_state.safetensors' step and ckpt_id, checked against model.safetensors), and the
# step it holds must be the one the files left on disk imply (a save killed before its
# journal keeps the previous step, one killed after it rolls forward); (b) the run resumes
# with `--resume DIR --out DIR` (which loads train_state) and goes on. At the end the
# log.jsonl of the interrupted run must give, step by step, the very "loss" and
# "grad_norm" text of one uninterrupted run with the same flags and seed (so must every
# line the killed segments logged before dying), and the final checkpoints' tensors must
# be bit-identical.
#
# Kill moments (seeded by --seed; each kill takes one of three kinds). The uninterrupted run
# goes first and measures the start-up time U (launch to the first log line) and the time T
# of a step with its save; delays are drawn in those units, so that a kill lands as planned
# however loaded the machine is, and each segment makes 0-8 steps:
#   time     SIGKILL D seconds after the launch: D uniform in [0, U] (a kill during start-up)
#            with probability 0.15, else U + uniform [0, 8 T] (a step's computation or its
#            save, as it happens; with a save every step, the save is most of T)
#   watch    poll the directory (every 0.5 ms) for the J-th save to start (config.json.new
#            or its .tmp appearing; J in 1-8), wait uniform [0, T], SIGKILL: most land
#            mid-save, at a random point of it
#   syscall  run under `strace -e inject=CALL:signal=KILL:when=N`: SIGKILL on entering the
#            K-th rename / fsync / unlink of save J, i.e. exactly between two steps of the
#            save protocol (the strace line of the syscall is printed)
#
#   bench/chaos.sh [--kills N] [--steps S] [--seed K] [--mpi] [--keep]
#   env: CHAOS_KILLS CHAOS_STEPS CHAOS_SEED CHAOS_MPI=1 CHAOS_DIR CHAOS_DATA CHAOS_THREADS
# --mpi: both runs under `mpirun -np 2 ... --ep 2` (one thread a rank unless CHAOS_THREADS);
# the victim of each time/watch kill is mpirun, rank 0 or rank 1 (seeded); the syscall
# kills strace rank 0. Ranks left orphaned by a killed mpirun are killed by pid.
# Exit status: 0 when every kill left a readable checkpoint and the losses match.
set -u -o pipefail
cd "$(dirname "$0")/.."

KILLS=${CHAOS_KILLS:-20}
STEPS=${CHAOS_STEPS:-200}
SEED=${CHAOS_SEED:-12}
MPI=${CHAOS_MPI:-0}
KEEP=0
DATA=${CHAOS_DATA:-../shared/data/mathematics_dataset/train/numbers__place_value.txt}
CFG=configs/math-tiny.json
while [ $# -gt 0 ]; do
    case "$1" in
        --kills) KILLS=$2; shift 2 ;;
        --steps) STEPS=$2; shift 2 ;;
        --seed) SEED=$2; shift 2 ;;
        --mpi) MPI=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
        *) echo "chaos: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -f "$DATA" ] || { echo "chaos: no data file $DATA (set CHAOS_DATA)" >&2; exit 2; }
DATA=$(realpath "$DATA")
PY=/usr/bin/python3
command -v strace >/dev/null || { echo "chaos: strace is needed (apt-get install strace)" >&2; exit 2; }
if [ "$MPI" = 1 ]; then export OMP_NUM_THREADS=${CHAOS_THREADS:-1}; else export OMP_NUM_THREADS=${CHAOS_THREADS:-2}; fi
make -s moe || exit 2
MOE=$(realpath ./moe)

W=${CHAOS_DIR:-$(mktemp -d /tmp/moe-chaos.XXXXXX)}
mkdir -p "$W"
W=$(realpath "$W")
RUN=$W/run REF=$W/ref
rm -rf "$RUN" "$REF" "$W"/kill-*.log "$W"/seg-*.out
# the flags of both runs (a resume is given the same ones)
FLAGS=(--data "$DATA" --steps "$STEPS" --batch 8 --seq 64 --lr 2e-3 --warmup 20 --decay-steps "$STEPS"
       --min-lr 2e-4 --seed 7 --ckpt-every 1 --quiet)
[ "$MPI" = 1 ] && FLAGS+=(--ep 2)

cat >"$W/chaos.py" <<'PY'
import json, os, random, re, signal, struct, sys, time

def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n

def log_lines(path):   # complete lines only (a torn last line is dropped, as log_carry does)
    try: text = open(path).read()
    except FileNotFoundError: return []
    return [l for l in text.split("\n")[:-1] if l.strip()]

RX = re.compile(r'"step":(\d+),"loss":([^,]+),.*?"grad_norm":([^,]+),')
def fields(line):
    m = RX.search(line)
    return (int(m.group(1)), m.group(2), m.group(3)) if m else None

def plan(seed, n, mpi):
    rng, n, mpi = random.Random(int(seed)), int(n), mpi == "1"
    for _ in range(n):
        r = rng.random()
        victim = rng.choice(["mpirun", "rank0", "rank1"]) if mpi else "moe"
        if r < 0.35:
            print("time", round(rng.random(), 4), victim)
        elif r < 0.70:
            print("watch", rng.randint(1, 8), round(rng.random(), 4), victim)
        else:
            call = rng.choices(["rename", "fsync", "unlink"], [0.5, 0.35, 0 if mpi else 0.15])[0]
            k = rng.randint(1, {"rename": 7, "fsync": 9, "unlink": 1}[call])
            print("syscall", rng.randint(1, 8), call, k, "rank0" if mpi else "moe")

def children():
    kids = {}
    for p in os.listdir("/proc"):
        if not p.isdigit(): continue
        try: pp = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError): continue
        kids.setdefault(pp, []).append(int(p))
    return kids

def target(root, victim):
    if victim in ("moe", "mpirun"): return root
    want = victim[4:]
    kids, todo = children(), [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            try: env = open(f"/proc/{c}/environ", "rb").read().split(b"\0")
            except OSError: env = []
            if f"OMPI_COMM_WORLD_RANK={want}".encode() in env and open(f"/proc/{c}/comm").read().strip() == "moe": return c
            todo.append(c)
    return None

def alive(pid):
    try:
        st = open(f"/proc/{pid}/stat").read()
        return st.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError: return False

def killer(mode, root, run, a, b, victim):
    root = int(root)
    t0 = time.monotonic()
    if mode == "time":
        while time.monotonic() - t0 < float(a):
            if not alive(root): return
            time.sleep(0.005)
    else:   # watch: the a-th save to start, then b ms
        marks = [os.path.join(run, "config.json.new"), os.path.join(run, "config.json.new.tmp")]
        seen, inside = 0, any(map(os.path.exists, marks))
        while seen < int(a):
            now = any(map(os.path.exists, marks))
            if now and not inside: seen += 1
            inside = now
            if not now and not alive(root): return
            time.sleep(0.0005)
        time.sleep(float(b))
    pid = target(root, victim)
    for _ in range(200):   # a rank not started yet: wait for it
        if pid or not alive(root): break
        time.sleep(0.01); pid = target(root, victim)
    if pid and alive(pid):
        os.kill(pid, signal.SIGKILL)
        print(f"{victim} pid {pid}", flush=True)

def state(run, since):   # after a kill: last step logged, what the save protocol left behind
    try: names = os.listdir(run)
    except FileNotFoundError: names = []
    journal = "ckpt.commit" in names
    # a *.tmp older than this launch is a leftover of an earlier kill, not this save's
    fresh = lambda n: not n.endswith(".tmp") or os.stat(os.path.join(run, n)).st_mtime > float(since) - 0.1
    names = [n for n in names if fresh(n)]
    left = sorted(n for n in names if n.endswith((".new", ".new.tmp")) or n.startswith("ckpt.commit"))
    steps = [f[0] for f in map(fields, log_lines(os.path.join(run, "log.jsonl"))) if f]
    phase = "journal" if journal else "pre" if left else "log" if "log.jsonl.tmp" in names else "none"
    print(steps[-1] if steps else 0, phase, ",".join(left) or "-")

def ckpt_step(run):   # train_state's step, and the two files from the same save
    h, _ = header(os.path.join(run, "train_state.safetensors"))
    ts = json.loads(h["__metadata__"]["train_state"])
    hm, _ = header(os.path.join(run, "model.safetensors"))
    if hm["__metadata__"]["ckpt_id"] != ts["ckpt_id"]:
        sys.exit(f"ckpt_id differs: model {hm['__metadata__']['ckpt_id']} train_state {ts['ckpt_id']}")
    print(int(ts["step"]))

def compare(ref, final, steps, *snaps):   # snaps: LOG:FROM, a killed segment's log and start step
    steps = int(steps)
    want = {}
    for l in log_lines(ref):
        s, lo, g = fields(l)
        want[s] = (lo, g)
    if sorted(want) != list(range(1, steps + 1)): sys.exit(f"the reference log does not hold steps 1..{steps}")
    got = [fields(l) for l in log_lines(final)]
    if [g[0] for g in got] != list(range(1, steps + 1)):
        sys.exit(f"the resumed log does not hold steps 1..{steps} once each, in order: {[g[0] for g in got][:50]}...")
    bad = [(s, lo, g, want[s]) for s, lo, g in got if (lo, g) != want[s]]
    extra = 0
    for sp in snaps:   # every line a killed segment logged before it died
        p, start = sp.rsplit(":", 1)
        for l in log_lines(p):
            f = fields(l)
            if not f or f[0] <= int(start): continue   # (carried from the segments before)
            extra += 1
            if (f[1], f[2]) != want.get(f[0]): bad.append((f[0], f[1], f[2], want.get(f[0]), os.path.basename(p)))
    for b in bad[:10]: print("  differs:", b)
    if bad: sys.exit(f"{len(bad)} logged steps differ from the uninterrupted run (first at step {bad[0][0]})")
    print(extra)

def tensors(a, b):   # the tensors of two checkpoints, byte for byte (metadata aside)
    for name in ("model.safetensors", "train_state.safetensors"):
        ha, oa = header(os.path.join(a, name)); hb, ob = header(os.path.join(b, name))
        ha.pop("__metadata__", None); hb.pop("__metadata__", None)
        if ha != hb: sys.exit(f"{name}: different tensor layout")
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            fa.seek(oa); fb.seek(ob)
            if fa.read() != fb.read():
                sys.exit(f"{name}: tensors differ from the uninterrupted run's")

def orphans(run):   # our processes still alive after a kill: argv mentions this run dir
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid(): continue
        try: argv = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        except OSError: continue
        if argv and os.path.basename(argv[0]).decode() in ("moe", "strace", "mpirun") and run.encode() in argv: print(p)

globals()[sys.argv[1]](*sys.argv[2:])
PY
py() { "$PY" "$W/chaos.py" "$@"; }

# one launch of the training: fresh (--model) or resumed; optional strace injection
launch() {   # launch fresh|resume OUT [strace args...]; sets LPID
    local how=$1 out=$2; shift 2
    local start=(--model "$CFG")
    [ "$how" = resume ] && start=(--resume "$out")
    local cmd=("$MOE" train "${start[@]}" --out "$out" "${FLAGS[@]}")
    if [ $# -gt 0 ]; then
        if [ "$MPI" = 1 ]; then   # strace rank 0 only
            printf '#!/bin/sh\n[ "$OMPI_COMM_WORLD_RANK" = 0 ] && exec %s "$@"\nexec "$@"\n' "$*" >"$W/rank0.sh"
            chmod +x "$W/rank0.sh"
            cmd=("$W/rank0.sh" "${cmd[@]}")
        else
            cmd=("$@" "${cmd[@]}")
        fi
    fi
    [ "$MPI" = 1 ] && cmd=(mpirun --allow-run-as-root --oversubscribe -np 2 -x OMP_NUM_THREADS "${cmd[@]}")
    LAUNCHED=$(date +%s.%N)
    "${cmd[@]}" >>"$W/seg-$SEG.out" 2>&1 &
    LPID=$!
}

t0=$(date +%s.%N)
mode="one process, OMP_NUM_THREADS=$OMP_NUM_THREADS"
[ "$MPI" = 1 ] && mode="mpirun -np 2 --ep 2, OMP_NUM_THREADS=$OMP_NUM_THREADS a rank"
echo "chaos: $CFG on $(basename "$DATA"), $STEPS steps, checkpoint every step, $KILLS kills (seed $SEED; $mode); work dir $W"

# --- the uninterrupted run
SEG=ref
launch fresh "$REF"
tf=
while kill -0 $LPID 2>/dev/null; do   # the first log line: the end of start-up
    [ -s "$REF/log.jsonl" ] && { tf=$(date +%s.%N); break; }
    sleep 0.02
done
wait $LPID; rc=$?
if [ $rc -ne 0 ] || [ -z "$tf" ]; then echo "chaos: FAIL: the uninterrupted run failed ($rc): $(tail -3 "$W/seg-ref.out")"; exit 1; fi
t1=$(date +%s.%N)
U=$(awk "BEGIN{printf \"%.3f\", $tf - $t0}") T=$(awk "BEGIN{printf \"%.4f\", ($t1 - $tf) / ($STEPS - 1)}")
echo "reference: $STEPS steps uninterrupted in $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s (start-up U = $U s, a step with its save T = $T s)"

# --- the interrupted run
snaps=()
fail=0 unreadable=0 tmpleft=0 midsave=0 pre=0 post=0 had_ckpt=0 how=fresh from=0 k=0
failmsg=()
mapfile -t PLAN < <(py plan "$SEED" "$KILLS" "$MPI")
[ ${#PLAN[@]} -eq "$KILLS" ] || { echo "chaos: cannot draw the kill plan" >&2; exit 2; }
for line in "${PLAN[@]}"; do
    k=$((k + 1)); SEG=$k
    read -r kind a b c d <<<"$line"
    desc= victim=moe
    rm -f "$W/strace.out"
    case $kind in
        time)
            victim=$b
            D=$(awk "BEGIN{u = $a; printf \"%.3f\", u < 0.15 ? u / 0.15 * $U : $U + (u - 0.15) / 0.85 * 8 * $T}")
            launch $how "$RUN"
            py killer time $LPID "$RUN" "$D" 0 "$victim" >"$W/killed" & KPID=$!
            desc="time: $D s after launch" ;;
        watch)
            victim=$c; X=$(awk "BEGIN{printf \"%.3f\", $b * $T}")
            launch $how "$RUN"
            py killer watch $LPID "$RUN" "$a" "$X" "$victim" >"$W/killed" & KPID=$!
            desc="watch: save $a + $(awk "BEGIN{printf \"%d\", $X * 1000}") ms" ;;
        syscall)
            victim=$d
            case $b in rename) s0=1 per=7 ;; fsync) s0=2 per=9 ;; unlink) s0=0 per=1 ;; esac
            when=$((s0 + (a - 1) * per + c))
            launch $how "$RUN" strace -qq -y -o "$W/strace.out" -e trace="$b" -e inject="$b":signal=KILL:when=$when
            KPID=
            desc="syscall: $b #$c of save $a" ;;
    esac
    [ "$MPI" = 1 ] && desc="$desc, victim $victim"
    { wait $LPID; } 2>/dev/null; rc=$?
    [ -n "$KPID" ] && { wait "$KPID" 2>/dev/null; }
    # orphans (a killed mpirun's ranks, a killed strace's tracee): by pid
    for try in 1 2 3 4 5 6 7 8 9 10; do
        orph=$(py orphans "$RUN")
        [ -z "$orph" ] && break
        [ $try = 1 ] && desc="$desc, $(echo $orph | wc -w) orphan(s) killed"
        kill -9 $orph 2>/dev/null; sleep 0.2
    done
    if [ $rc -eq 0 ]; then
        failmsg+=("the run finished before kill $k (raise --steps)"); fail=1
        echo "kill $(printf %2d $k)/$KILLS [$desc]: the run finished before the kill"; break
    fi
    # died of our SIGKILL, not by itself (a resume that cannot load the checkpoint fails)
    if { [ "$kind" = syscall ] && ! grep -q "killed by SIGKILL" "$W/strace.out" 2>/dev/null; } ||
       { [ "$kind" != syscall ] && [ ! -s "$W/killed" ]; }; then
        echo "kill $(printf %2d $k)/$KILLS [$desc]: the run stopped by itself (exit $rc): $(grep -v '^$' "$W/seg-$k.out" | tail -1)"
        fail=1; failmsg+=("segment $k failed by itself (exit $rc)"); break
    fi
    if [ "$kind" = syscall ]; then   # the syscall the process died entering
        sc=$(grep -E "^(rename|fsync|unlink)" "$W/strace.out" 2>/dev/null | tail -1 | sed -E "s#$RUN/##g; s#$RUN#DIR#g; s/ += .*//")
        [ -n "$sc" ] && desc="$desc = $sc"
    fi
    read -r last phase left < <(py state "$RUN" "$LAUNCHED")
    cp -f "$RUN/log.jsonl" "$W/kill-$k.log" 2>/dev/null || : >"$W/kill-$k.log"
    snaps+=("$W/kill-$k.log:$from")
    case $phase in
        journal) save="yes, journal written: rolled forward ($left)"; midsave=$((midsave + 1)); post=$((post + 1)); died="saving step $last" ;;
        pre) save="yes, before the journal: dropped ($left)"; midsave=$((midsave + 1)); pre=$((pre + 1)); died="saving step $last" ;;
        log) save="no (rewriting log.jsonl at start-up)"; died="at start-up" ;;
        *) save=no; died="in step $((last + 1))" ;;
    esac
    # (a) the checkpoint loads: eval, then train_state's step and ckpt_id
    if "$MOE" eval --ckpt "$RUN" --data "$DATA" --limit 5 --json >"$W/eval.json" 2>"$W/eval.err"; then
        if ! n=$(py ckpt_step "$RUN" 2>"$W/eval.err"); then
            echo "kill $(printf %2d $k)/$KILLS [$desc]: died $died, save in progress: $save; UNREADABLE train_state: $(cat "$W/eval.err")"
            unreadable=$((unreadable + 1)); fail=1; failmsg+=("kill $k: unreadable train_state"); break
        fi
        had_ckpt=1
        # the step the files on disk imply
        case $phase in journal) want="$last" ;; pre) want=$((last - 1)) ;; *) want="$((last - 1)) $last" ;; esac
        ok=0
        for w in $want; do [ "$n" = "$w" ] && ok=1; done
        [ "$n" -lt "$from" ] && ok=0
        if [ $ok = 0 ]; then
            echo "kill $(printf %2d $k)/$KILLS [$desc]: died $died, save in progress: $save; checkpoint holds step $n, expected $want (resumed from $from)"
            fail=1; failmsg+=("kill $k: checkpoint at step $n, expected ${want// / or }"); break
        fi
        how=resume from=$n
        tmp=$(cd "$RUN" && ls -- *.tmp 2>/dev/null | tr '\n' ' ')
        [ -n "$tmp" ] && { tmpleft=$((tmpleft + 1)); tmp=" (recovery left ${tmp% })"; }
        echo "kill $(printf %2d $k)/$KILLS [$desc]: died $died, save in progress: $save; checkpoint readable$tmp, resumed from step $n"
    elif [ $had_ckpt = 0 ] && [ "$last" -le 1 ] && [ ! -e "$RUN/config.json" ] && [ ! -e "$RUN/model.safetensors" ]; then
        how=fresh from=0
        echo "kill $(printf %2d $k)/$KILLS [$desc]: died $died, save in progress: $save; no checkpoint yet, started again"
    else
        echo "kill $(printf %2d $k)/$KILLS [$desc]: died $died, save in progress: $save; UNREADABLE checkpoint: $(tail -1 "$W/eval.err")"
        unreadable=$((unreadable + 1)); fail=1; failmsg+=("kill $k: unreadable checkpoint")
        cp -a "$RUN" "$W/unreadable-$k" 2>/dev/null
        break
    fi
done

# --- the last segment runs to the end
if [ $fail = 0 ]; then
    SEG=final
    launch $how "$RUN"; wait $LPID; rc=$?
    if [ $rc -ne 0 ]; then fail=1; failmsg+=("the last resume failed ($rc): $(tail -1 "$W/seg-final.out")"); fi
fi
if [ $fail = 0 ]; then
    if extra=$(py compare "$REF/log.jsonl" "$RUN/log.jsonl" "$STEPS" "${snaps[@]}" 2>"$W/cmp.err"); then
        echo "logs: the $STEPS steps of the resumed run's log.jsonl, and the $extra lines the killed segments had logged before dying, give the uninterrupted run's loss and grad_norm text"
    else
        cat "$W/cmp.err"; fail=1; failmsg+=("losses differ")
    fi
fi
if [ $fail = 0 ]; then
    if py tensors "$REF" "$RUN" 2>"$W/cmp.err"; then echo "final checkpoint: model and AdamW moments bit-identical to the uninterrupted run's"
    else cat "$W/cmp.err"; fail=1; failmsg+=("final tensors differ"); fi
fi
t2=$(date +%s.%N)
[ $tmpleft -gt 0 ] && echo "note: after $tmpleft kills the loaded checkpoint directory still held *.tmp files of the killed save (harmless: the next save overwrites them)"
echo "mid-save kills: $midsave of $k ($pre before the journal, $post after it); interrupted run $(awk "BEGIN{printf \"%.1f\", $t2 - $t1}") s"
if [ $fail = 0 ]; then
    echo "chaos: $k kills, $unreadable unreadable checkpoints, losses identical over $STEPS steps"
    [ $KEEP = 1 ] || [ -n "${CHAOS_DIR:-}" ] || rm -rf "$W"
    exit 0
fi
echo "chaos: FAIL after $k kills, $unreadable unreadable checkpoints: $(IFS=';'; echo "${failmsg[*]}") (work dir kept: $W)"
exit 1
