#!/usr/bin/env bash
# moe bench against the project's PyTorch baseline (tests/ref/bench_torch.py: the same
# model and batch on random tokens) on the SPEC §6 configs and the MLA families (pangu-tiny:
# MLA, sandwich norm, one MTP module; bench-ds3: DeepSeek-V3's shape at bench-s's scale),
# interleaved in one run so that the machine's noise hits both alike. PyTorch's MFU is moe.c's
# FLOPs per token (same model) over the sgemm peak moe bench measured at the same threads. PyTorch as a user would pick it: Debian's
# python3-torch and the current PyPI release (in a virtual environment this script makes),
# at 1 and 2 threads, and the PyPI release under torch.compile where it works.
#   bench/vs_torch.sh [STEPS] [CONFIGS...]
set -uo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-3}; shift || true
CONFIGS=${*:-bench-tiny bench-s bench-fine pangu-tiny bench-ds3}
B=${BATCH:-8}; T=${SEQ:-256}
VENV=${VENV:-build/venv-torch}
make -s moe >/dev/null
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  echo "vs_torch: making $VENV with the current torch from PyPI (large download)" >&2
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q torch numpy >&2 || { echo "vs_torch: pip install failed; PyPI torch left out" >&2; }
fi
have_pip=0; "$VENV/bin/python" -c 'import torch' 2>/dev/null && have_pip=1
res=$(mktemp); trap 'rm -f "$res"' EXIT
run() {   # run NAME CFG CMD...: appends "cfg name tokens_per_s peak_rss_mb mfu"
  local name=$1 cfg=$2; shift 2
  local out; out=$("$@" 2>/dev/null | tail -1)
  local tps rss mfu
  tps=$(echo "$out" | /usr/bin/python3 -c 'import json,sys; o=json.load(sys.stdin); print(o["tokens_per_s"], o["peak_rss_mb"], o.get("mfu", ""))' 2>/dev/null) || { echo "$cfg $name failed - -" >>"$res"; return; }
  echo "$cfg $name $tps" >>"$res"
}
for cfg in $CONFIGS; do
  c=configs/$cfg.json
  for th in 1 2; do
    # the defaults (selective recomputation, bf16 storage), and keeping every activation in f32
    run "moe.c/${th}t" $cfg ./moe bench --model $c --batch $B --seq $T --steps $STEPS --threads $th --json
    run "moe.c-none-f32/${th}t" $cfg ./moe bench --model $c --batch $B --seq $T --steps $STEPS --threads $th --json \
        --recompute none --act-dtype f32
    run "torch-$(/usr/bin/python3 -c 'import torch; print(torch.__version__)' 2>/dev/null)/${th}t" $cfg \
        /usr/bin/python3 tests/ref/bench_torch.py --model $c --batch $B --seq $T --steps $STEPS --threads $th
    if [ $have_pip = 1 ]; then
      v=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])')
      run "torch-$v/${th}t" $cfg "$VENV/bin/python" tests/ref/bench_torch.py --model $c --batch $B --seq $T --steps $STEPS --threads $th
      run "torch-$v-compile/${th}t" $cfg "$VENV/bin/python" tests/ref/bench_torch.py --model $c --batch $B --seq $T --steps $STEPS --threads $th --compile
    fi
  done
done
echo "# $(date -u +%Y-%m-%d) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; batch $B x seq $T, best of $STEPS steps"
/usr/bin/python3 - "$res" <<'P'
import sys
rows = [l.split() for l in open(sys.argv[1])]
cfgs = list(dict.fromkeys(r[0] for r in rows))
print(f"| config | variant | tokens/s | vs best PyTorch | MFU | peak RSS MB |")
print(f"|---|---|---|---|---|---|")
for c in cfgs:
    rs = [r for r in rows if r[0] == c and r[2] != "failed"]
    torch = [r for r in rs if r[1].startswith("torch")]
    # FLOPs per token over the peak, from moe.c's rows at the same threads (mfu / tokens_per_s)
    per = {}
    for r in rs:
        if r[1].startswith("moe") and len(r) > 4 and r[4]:
            per.setdefault(r[1].split("/")[1], []).append(float(r[4]) / float(r[2]))
    for r in torch:
        th = r[1].split("/")[1]
        if th in per and len(r) <= 4:
            r.append(f"{float(r[2]) * sum(per[th]) / len(per[th]):.4f}")
    best = max((float(r[2]) for r in torch), default=0)
    bname = next((r[1] for r in torch if float(r[2]) == best), "-")
    for r in [r for r in rows if r[0] == c]:
        if r[2] == "failed":
            print(f"| {c} | {r[1]} | failed | | | |"); continue
        ratio = f"{float(r[2]) / best:.2f}x" if best else "-"
        mfu = f"{float(r[4]):.3f}" if len(r) > 4 and r[4] else ""
        print(f"| {c} | {r[1]} | {float(r[2]):.0f} | {ratio} | {mfu} | {float(r[3]):.0f} |")
    moe = max((float(r[2]) for r in rs if r[1].startswith("moe")), default=0)
    print(f"| **{c}** | **moe.c best / PyTorch best ({bname})** | | **{moe / best:.2f}x** | | |" if best else "")
P
