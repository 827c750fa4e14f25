"""moe.c against the reference library (transformers) on its own checkpoints.

tests/hf/fixtures/<name>/ hold small random models of model_type deepseek_v3, qwen3_moe and
mixtral, saved by the library's save_pretrained (one file, bf16, or 8 shards with an index),
and the library's logits, loss and per-tensor gradients on three Q/A examples
(expected.safetensors, made by tests/hf/make_fixtures.py). Here `moe eval --logits`, `moe
eval` and `moe grad` load those directories as they are and must agree: logits and every
gradient within relative 1e-4 (norm of the difference over the norm), the loss within 1e-5.
Runs with Debian's python3 and numpy only. One PASS/FAIL line per check."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ref"))
import moe_ref  # noqa: E402

MOE = os.environ.get("MOE", os.path.join(HERE, "..", "moe"))
FIX = os.path.join(HERE, "hf", "fixtures")
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(("PASS " if ok else "FAIL ") + name + (f" ({detail})" if detail else ""), flush=True)


def run(args):
    p = subprocess.run([MOE] + args, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"moe {' '.join(args)} failed: {p.stderr.strip()}")
    return p.stdout


def relerr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def read_expected(path):
    """expected.safetensors: F32 tensors (logits, gradients) and I64 ones (tokens)"""
    import struct
    with open(path, "rb") as f:
        buf = f.read()
    (hl,) = struct.unpack("<Q", buf[:8])
    hdr = json.loads(buf[8:8 + hl])
    data, out = buf[8 + hl:], {}
    for k, t in hdr.items():
        if k == "__metadata__":
            continue
        b, e = t["data_offsets"]
        dt = {"F32": "<f4", "I64": "<i8"}[t["dtype"]]
        out[k] = np.frombuffer(data[b:e], dtype=dt).reshape(t["shape"])
    return out


def main():
    tmp = tempfile.mkdtemp(prefix="moe-hf-")
    for name in sorted(os.listdir(FIX)):
        d = os.path.join(FIX, name)
        try:
            meta = json.load(open(os.path.join(d, "expected.json")))
            exp = read_expected(os.path.join(d, "expected.safetensors"))
            qa = os.path.join(tmp, name + ".txt")
            with open(qa, "wb") as f:
                for ex in meta["examples"]:
                    f.write(ex["question"].encode() + b"\n" + ex["answer"].encode() + b"\n")
            n = len(meta["examples"])
            # the logits at every position of each example
            lg = os.path.join(tmp, name + ".logits.safetensors")
            ev = json.loads(run(["eval", "--ckpt", d, "--data", qa, "--logits", lg, "--json"]))
            mine, _ = moe_ref.read_safetensors(lg)
            worst = max(relerr(mine[f"ex{i}.logits"], exp[f"ex{i}.logits"]) for i in range(n))
            check(f"hf {name}: logits of {n} examples", worst <= 1e-4, f"worst rel {worst:.2e}")
            le = abs(ev["loss"] - meta["loss"]) / abs(meta["loss"])
            check(f"hf {name}: eval loss", le <= 1e-5, f"moe {ev['loss']:.9g} library {meta['loss']:.9g} rel {le:.2e}")
            # the loss and every gradient, the examples as one batch
            g = os.path.join(tmp, name + ".grad.safetensors")
            gj = json.loads(run(["grad", "--ckpt", d, "--data", qa, "--limit", str(n), "--out", g, "--json"]))
            gm, _ = moe_ref.read_safetensors(g)
            le = abs(gj["loss"] - meta["loss"]) / abs(meta["loss"])
            check(f"hf {name}: grad loss", le <= 1e-5, f"rel {le:.2e}")
            names = [k[5:] for k in exp if k.startswith("grad.")]
            missing = [k for k in names if k not in gm]
            extra = [k for k in gm if k not in names and "e_score_correction_bias" not in k]
            worst, wname = 0.0, ""
            for k in names:
                if k in gm and np.linalg.norm(exp["grad." + k]) > 0:
                    e = relerr(gm[k], exp["grad." + k])
                    if e > worst:
                        worst, wname = e, k
            check(f"hf {name}: {len(names)} gradients", worst <= 1e-4 and not missing and not extra,
                  f"worst {wname} rel {worst:.2e}" + (f"; missing {missing[:2]}" if missing else "")
                  + (f"; extra {extra[:2]}" if extra else ""))
            # moe export writes the same model back in the library's layout: it loads with
            # the same logits, bit for bit
            x = os.path.join(tmp, name + ".export")
            run(["export", "--ckpt", d, "--out", x])
            lx = os.path.join(tmp, name + ".export.logits.safetensors")
            run(["eval", "--ckpt", x, "--data", qa, "--logits", lx])
            back, _ = moe_ref.read_safetensors(lx)
            same = all(np.array_equal(back[k], mine[k]) for k in mine)
            check(f"hf {name}: moe export loads back with the same logits", same)
        except Exception as e:  # noqa: BLE001
            check(f"hf {name}", False, str(e).strip().splitlines()[-1] if str(e).strip() else repr(e))
    # moe.c's own model with an MTP module, exported as deepseek_v3 (its MTP layer in
    # DeepSeek-V3's layout, with copies of the embedding and head): the training loss, MTP
    # included, is the same after the round trip
    try:
        cfg = dict(vocab_size=260, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
                   moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2, kv_lora_rank=16,
                   q_lora_rank=24, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, scoring_func="sigmoid",
                   topk_method="group_limited", n_group=2, topk_group=1, rms_norm_eps=1e-6, num_mtp_layers=1,
                   max_position_embeddings=128)
        cp, ck, x = (os.path.join(tmp, "own" + s) for s in (".json", "", ".export"))
        json.dump(cfg, open(cp, "w"))
        run(["init", "--model", cp, "--out", ck, "--seed", "3"])
        run(["export", "--ckpt", ck, "--out", x])
        xc = json.load(open(os.path.join(x, "config.json")))
        qa = os.path.join(tmp, "own.txt")
        open(qa, "w").write("What is 2 + 2?\n4\nWhich is larger: 3 or 9?\n9\n")
        a = json.loads(run(["grad", "--ckpt", ck, "--data", qa, "--limit", "2", "--out", os.path.join(tmp, "g1"), "--json"]))
        b = json.loads(run(["grad", "--ckpt", x, "--data", qa, "--limit", "2", "--out", os.path.join(tmp, "g2"), "--json"]))
        check("moe_v1 MLA + MTP exports as deepseek_v3 and loads back with the same training loss",
              xc["model_type"] == "deepseek_v3" and xc.get("num_nextn_predict_layers") == 1 and a["loss"] == b["loss"],
              f"{xc['model_type']}, loss {a['loss']:.9g} and {b['loss']:.9g}")
    except Exception as e:  # noqa: BLE001
        check("hf own export", False, str(e).strip().splitlines()[-1] if str(e).strip() else repr(e))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
