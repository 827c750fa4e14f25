#!/usr/bin/env python3
"""moe.c's own checkpoints through `moe export --format hf` into the reference library.

For each config below: `moe init` a checkpoint, `moe export` it, load the export with
AutoModelForCausalLM.from_pretrained (float32, eager), and compare its logits on a few Q/A
examples (moe.c's byte tokens: <bos> q <sep> a) with `moe eval --logits` on the original.
Run with the venv of scripts/hf-venv.sh (not part of make test):
    $HF_VENV/bin/python tests/hf/export_roundtrip.py [--moe ./moe]
Prints one line per config (max |logit diff| relative to max |logit|) and exits 1 on a miss."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

BASE = dict(vocab_size=260, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8, num_experts_per_tok=2,
            max_position_embeddings=128)
CONFIGS = {
    # grouped-query attention, softmax top-2, no shared expert: Mixtral's math
    "moe_v1 -> mixtral": dict(n_shared_experts=0),
    # the same with Qwen3's q/k norm and two dense first layers (mlp_only_layers)
    "moe_v1 q/k norm -> qwen3_moe": dict(n_shared_experts=0, qk_norm=True, first_k_dense_replace=1,
                                         norm_topk_prob=False),
    # MLA, sigmoid group-limited routing, shared expert, MTP module: DeepSeek-V3's
    "moe_v1 MLA + MTP -> deepseek_v3": dict(kv_lora_rank=16, q_lora_rank=24, qk_nope_head_dim=16, qk_rope_head_dim=8,
                                            v_head_dim=16, num_key_value_heads=4, scoring_func="sigmoid",
                                            topk_method="group_limited", n_group=4, topk_group=2,
                                            routed_scaling_factor=2.5, rope_interleave=True, rms_norm_eps=1e-6,
                                            first_k_dense_replace=1, num_mtp_layers=1),
    # Pangu's MLA without the sandwich norm, RoPE rotate-half
    "pangu_ultra_moe (no sandwich) -> deepseek_v3": dict(model_type="pangu_ultra_moe", attention_kv_lora_dim=16,
                                                         attention_q_lora_dim=24, attention_qk_dim=16,
                                                         attention_qk_rope_dim=8, attention_v_dim=16,
                                                         num_key_value_heads=4, rms_norm_eps=1e-6,
                                                         num_dense_layers=1, num_routed_experts=8,
                                                         num_shared_experts=1),
}
QA = [("What is 12 + 30?", "42"), ("Which is bigger: 3 or 7?", "7"), ("Round 3.14159 to 2 dp.", "3.14")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moe", default=os.path.join(os.path.dirname(__file__), "..", "..", "moe"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="moe-export-")
    qa = os.path.join(tmp, "qa.txt")
    with open(qa, "w") as f:
        for q, ans in QA:
            f.write(f"{q}\n{ans}\n")
    bad = 0
    for i, (name, extra) in enumerate(CONFIGS.items()):
        cfg = dict(BASE)
        if extra.get("model_type") == "pangu_ultra_moe":
            cfg.pop("n_routed_experts")
        cfg.update(extra)
        cp, ck, ex = (os.path.join(tmp, f"{i}{s}") for s in (".json", "", ".hf"))
        json.dump(cfg, open(cp, "w"))
        subprocess.run([a.moe, "init", "--model", cp, "--out", ck, "--seed", str(10 + i)], check=True, capture_output=True)
        p = subprocess.run([a.moe, "export", "--ckpt", ck, "--out", ex], capture_output=True, text=True)
        if p.returncode:
            print(f"FAIL {name}: {p.stderr.strip()}")
            bad += 1
            continue
        lg = os.path.join(tmp, f"{i}.logits.safetensors")
        subprocess.run([a.moe, "eval", "--ckpt", ck, "--data", qa, "--logits", lg], check=True, capture_output=True)
        mine = load_file(lg)
        model = AutoModelForCausalLM.from_pretrained(ex, dtype=torch.float32, attn_implementation="eager")
        model.eval()
        worst = 0.0
        for k, (q, ans) in enumerate(QA):
            ids = [257] + list(q.encode()) + [258] + list(ans.encode())   # the inputs: <eos> is the last target
            with torch.no_grad():
                out = model(torch.tensor([ids])).logits[0].numpy()
            ref = mine[f"ex{k}.logits"]
            worst = max(worst, float(np.abs(out - ref).max() / max(1.0, np.abs(ref).max())))
        ok = worst <= 1e-4
        bad += not ok
        mt = json.load(open(os.path.join(ex, "config.json")))["model_type"]
        print(f"{'PASS' if ok else 'FAIL'} {name}: exported as {mt}, from_pretrained logits vs moe eval max rel diff {worst:.2e}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
