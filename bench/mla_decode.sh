#!/usr/bin/env bash
# MLA under a KV cache: the absorbed form against the expanded one, and the cache's bytes a
# token against grouped-query attention of the same model.
#   bash bench/mla_decode.sh [CFG] [CTX...]       (defaults: configs/bench-mla.json, 128 512 2048)
# For each cache length C: the prefill of C tokens and the median time of forward passes of
# N = 1, 4, 16, 64, 256 new tokens over the C cached ones, in each form and in auto (the
# per-call choice by estimated cost, blk_mla.c); the crossover is the smallest N at which the
# expanded form is faster. THREADS (default 1: on a shared machine OpenMP's barriers with
# more threads than free cores cost more than they give) and STEPS (default 5) as you like.
set -eu
cd "$(dirname "$0")/.."
CFG=${1:-configs/bench-mla.json}; shift || true
CTXS=${*:-128 512 2048}
MOE=${MOE:-./moe}
export OMP_NUM_THREADS=${THREADS:-1}
T=$(mktemp -d /tmp/moe-mla-bench.XXXXXX)
trap 'rm -rf "$T"' EXIT
echo "# $CFG, $OMP_NUM_THREADS thread(s), $(uname -m), load $(cut -d' ' -f1-3 /proc/loadavg)"
for ctx in $CTXS; do
  for form in absorbed expanded auto; do
    $MOE bench --model "$CFG" --decode --seq "$ctx" --chunks 1,4,16,64,256 --steps "${STEPS:-5}" --mla-form $form --json
  done
done >"$T/runs.jsonl"
# the KV cache a token: this MLA config, and grouped-query twins (same hidden size, heads,
# layers; head dim hidden/heads) with every head its own KV head and with a quarter of them
python3 - "$CFG" "$T" "$MOE" <<'PY'
import json, subprocess, sys
cfg, tmp, moe = sys.argv[1:4]
runs = [json.loads(l) for l in open(tmp + "/runs.jsonl")]
by = {(r["form"], r["ctx"]): r for r in runs}
ctxs = sorted({r["ctx"] for r in runs})
print("\n| cache C | prefill absorbed ms | prefill expanded ms | prefill auto ms |")
print("|---|---|---|---|")
for c in ctxs:
    print(f"| {c} | " + " | ".join(f'{by[(f, c)]["prefill_ms"]:.1f}' for f in ("absorbed", "expanded", "auto")) + " |")
print("\n| cache C | new tokens N | absorbed ms | expanded ms | auto ms | expanded/absorbed |")
print("|---|---|---|---|---|---|")
for c in ctxs:
    cross = None
    for i, s in enumerate(by[("absorbed", c)]["steps"]):
        a, e, au = s["ms"], by[("expanded", c)]["steps"][i]["ms"], by[("auto", c)]["steps"][i]["ms"]
        if cross is None and e < a: cross = s["chunk"]
        print(f"| {c} | {s['chunk']} | {a:.2f} | {e:.2f} | {au:.2f} | {e / a:.2f} |")
    print(f"| {c} | crossover | expanded faster from N = {cross if cross else '> 256'} | | | |")
def kv(path):
    out = subprocess.run([moe, "bench", "--model", path, "--decode", "--kv-only", "--json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["kv_bytes_per_token"]
c = json.load(open(cfg))
keys = {"pangu_ultra_moe": dict(num_routed_experts="n_routed_experts", num_shared_experts="n_shared_experts")}.get(c.get("model_type"), {})
twin = dict(hidden_size=c["hidden_size"], num_hidden_layers=c["num_hidden_layers"], num_attention_heads=c["num_attention_heads"],
            vocab_size=c["vocab_size"], intermediate_size=c["intermediate_size"], moe_intermediate_size=c["moe_intermediate_size"],
            n_routed_experts=c.get("n_routed_experts", c.get("num_routed_experts")), num_experts_per_tok=c["num_experts_per_tok"],
            max_position_embeddings=c["max_position_embeddings"])
H, D = c["num_attention_heads"], c["hidden_size"]
print(f"\n| attention ({c['num_hidden_layers']} layers, hidden {D}, {H} heads) | KV cache bytes a token (f32) |")
print("|---|---|")
print(f"| MLA (kv_lora_rank {c.get('kv_lora_rank', c.get('attention_kv_lora_dim'))} + rope {c.get('qk_rope_head_dim', c.get('attention_qk_rope_dim'))}) | {kv(cfg):.0f} |")
for hkv in (H, max(1, H // 4), max(1, H // 16)):
    twin["num_key_value_heads"] = hkv
    p = f"{tmp}/gqa{hkv}.json"
    json.dump(twin, open(p, "w"))
    print(f"| {'MHA' if hkv == H else 'GQA'} ({hkv} KV heads of {D // H}) | {kv(p):.0f} |")
PY
