#!/usr/bin/env python3
"""Checks a Hugging Face checkpoint directory (as `moe export --format hf` will write it)
against expected outputs, with transformers itself as the judge.

    $HF_VENV/bin/python tests/hf/export_check.py DIR EXPECTED [--tol 1e-4] [--grads]

DIR       a directory with config.json and model.safetensors (or model-0000k-of-0000n.safetensors
          + model.safetensors.index.json)
EXPECTED  an expected.safetensors written by tests/hf/make_fixtures.py (ex{k}.input_ids,
          ex{k}.logits, ...), or a directory holding one

It loads DIR with AutoModelForCausalLM.from_pretrained in float32 (eager attention and experts),
fails on any missing or unexpected checkpoint key (transformers only warns), runs every
ex{k}.input_ids of EXPECTED (batch 1) and compares the logits (max |diff| <= --tol, relative to
max(1, max |logit|)), the loss if EXPECTED has targets, and with --grads the gradient of every
checkpoint key. Runs against the fixtures themselves:
    export_check.py tests/hf/fixtures/mixtral tests/hf/fixtures/mixtral/expected.safetensors
Prints one line per check and 'N passed, N failed'; exit status 1 if anything failed.
"""
import argparse
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import transformers
from transformers import AutoConfig, AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("expected")
    ap.add_argument("--tol", type=float, default=1e-4, help="max |logit diff| / max(1, max |logit|)")
    ap.add_argument("--grads", action="store_true", help="also compare the gradients (grad.<key>)")
    ap.add_argument("--grad-tol", type=float, default=1e-4, help="max |grad diff| / max(1e-3, max |grad|)")
    args = ap.parse_args()
    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(min(2, torch.get_num_threads()))

    exp_path = args.expected
    if os.path.isdir(exp_path):
        exp_path = os.path.join(exp_path, "expected.safetensors")
    exp = load_file(exp_path)
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        print(("ok   " if ok else "FAIL ") + what)
        if ok:
            passed += 1
        else:
            failed += 1

    cfg = AutoConfig.from_pretrained(args.dir)
    model, info = AutoModelForCausalLM.from_pretrained(
        args.dir, dtype=torch.float32, attn_implementation="eager", experts_implementation="eager",
        output_loading_info=True)
    model.eval()
    check(cfg.model_type in ("deepseek_v3", "qwen3_moe", "mixtral"), f"model_type {cfg.model_type}")
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        items = sorted(info.get(kind) or [])
        check(not items, f"{kind}: {items[:8]}{' ...' if len(items) > 8 else ''}")

    n_ex = len([k for k in exp if k.endswith(".input_ids")])
    check(n_ex > 0, f"{n_ex} examples in {exp_path}")
    total, n_targets = 0.0, 0
    model.zero_grad(set_to_none=True)
    results = []
    for k in range(n_ex):
        ids = exp[f"ex{k}.input_ids"].to(torch.int64)
        with torch.set_grad_enabled(args.grads):
            logits = model(input_ids=ids[None], use_cache=False).logits[0].float()
        want = exp[f"ex{k}.logits"]
        ok_shape = tuple(logits.shape) == tuple(want.shape)
        check(ok_shape, f"ex{k} logits shape {tuple(logits.shape)} (expected {tuple(want.shape)})")
        if not ok_shape:
            continue
        d = (logits.detach() - want).abs().max().item()
        scale = max(1.0, want.abs().max().item())
        check(d <= args.tol * scale, f"ex{k} logits max |diff| {d:.3e} (tol {args.tol * scale:.1e})")
        if f"ex{k}.targets" in exp:
            tg = exp[f"ex{k}.targets"].to(torch.int64)
            s = F.cross_entropy(logits, tg, ignore_index=-100, reduction="sum")
            results.append(s)
            total += s.item()
            n_targets += int((tg >= 0).sum())
    if n_targets:
        loss = total / n_targets
        want = float(load_meta(exp_path).get("loss", "nan"))
        check(abs(loss - want) <= 1e-5 * max(1.0, abs(want)), f"loss {loss:.6f} (expected {want:.6f})")
    if args.grads and n_targets:
        (sum(results) / n_targets).backward()
        grads = grads_by_checkpoint_key(model)
        want_keys = sorted(k[5:] for k in exp if k.startswith("grad."))
        check(set(want_keys) == set(grads), f"gradient keys: {len(grads)} (expected {len(want_keys)}); "
              f"differ: {sorted(set(want_keys) ^ set(grads))[:6]}")
        worst, worst_key = 0.0, None
        for key in want_keys:
            if key not in grads:
                continue
            w = exp["grad." + key]
            g = grads[key]
            if tuple(g.shape) != tuple(w.shape):
                check(False, f"grad {key} shape {tuple(g.shape)} (expected {tuple(w.shape)})")
                continue
            r = (g - w).abs().max().item() / max(1e-3, w.abs().max().item())
            if r > worst:
                worst, worst_key = r, key
        check(worst <= args.grad_tol, f"gradients: worst relative max |diff| {worst:.3e} ({worst_key})")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def load_meta(path):
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        return f.metadata() or {}


def grads_by_checkpoint_key(model):
    """The model's gradients named as its checkpoint keys: transformers' save_pretrained
    conversion applied to a copy whose parameters hold the gradients."""
    import tempfile
    from safetensors import safe_open
    gm = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in gm.named_parameters():
            src = params[name]
            p.copy_(src.grad if src.grad is not None else torch.zeros_like(src))
        for _, b in gm.named_buffers():
            b.fill_(float("nan"))
    out = {}
    with tempfile.TemporaryDirectory() as d:
        gm.save_pretrained(d, safe_serialization=True)
        for f in os.listdir(d):
            if f.endswith(".safetensors"):
                with safe_open(os.path.join(d, f), "pt") as sf:
                    for k in sf.keys():
                        t = sf.get_tensor(k)
                        if not (t.is_floating_point() and torch.isnan(t).all()):
                            out[k] = t.float()
    return out


if __name__ == "__main__":
    sys.exit(main())
