#!/usr/bin/env python3
"""Reference fixtures for loading/saving Hugging Face MoE checkpoints (issue 13).

Run with the venv of scripts/hf-venv.sh (never by `make test`):
    $HF_VENV/bin/python tests/hf/make_fixtures.py [--out tests/hf/fixtures] [--only NAME ...]

For each fixture it builds a small random model with transformers itself, saves it with
save_pretrained(safe_serialization=True) into <out>/<name>/, reloads what was saved as float32
and records in <out>/<name>/expected.safetensors, for the Q/A examples below:
    ex{k}.tokens      int64 [L]     <bos> q-bytes <sep> a-bytes <eos> (moe.c's byte tokens)
    ex{k}.input_ids   int64 [L-1]   the first L-1 tokens (what moe.c feeds)
    ex{k}.targets     int64 [L-1]   token i+1 where it is an answer byte or <eos>, else -100
    ex{k}.logits      f32 [L-1, V]  logits of the reloaded float32 model (batch 1, no mask)
    ex{k}.hidden.{j}  f32 [L-1, H]  hidden states: j=0 the embeddings, j=l+1 after decoder layer l
                                    (the last one is after the final norm, as transformers returns it)
    ex{k}.route.{l}.idx / .w        int64/f32 [L-1, top_k] router choice and weight of MoE layer l,
                                    in the order transformers returns them (sorted=False for deepseek)
    grad.<checkpoint key>  f32     d loss / d weight for every parameter, named and shaped exactly
                                    as the checkpoint's keys (per-expert tensors where the file is)
loss = (sum over the examples of the summed cross-entropy of their target tokens)
       / (total number of target tokens)        -- one mean over all answer+EOS tokens,
as moe.c's trainer averages a micro-batch. expected.json has the loss, per-example sums and
counts, the config, and every key/shape/dtype of every saved checkpoint file.
Weights: the expected values come from the weights AS STORED, cast to float32 (for the bf16
fixtures, the bf16-rounded values). Routing: eval mode, no jitter, no aux loss.
"""
import argparse
import json
import math
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file

import transformers
from transformers import AutoModelForCausalLM, DeepseekV3Config, MixtralConfig, Qwen3MoeConfig

TOK_BOS, TOK_SEP, TOK_EOS = 257, 258, 259
# a seed whose routing has a near-tie (chosen vs first rejected score closer than this, on any
# token of any MoE layer) is skipped for the next one: the C engine must pick the same experts
MIN_MARGIN = 1e-3


class NearTie(Exception):
    pass

EXAMPLES = [
    ("2+3=", "5"),
    ("Capital of France?", "Paris"),
    ("caf\u00e9 12*12", "144 ok"),  # non-ASCII: the utf-8 bytes of 'é' are two tokens
]


def encode(q, a):
    qb, ab = list(q.encode("utf-8")), list(a.encode("utf-8"))
    toks = [TOK_BOS] + qb + [TOK_SEP] + ab + [TOK_EOS]
    n_prompt = len(qb) + 2  # <bos> q <sep>
    inputs = toks[:-1]
    targets = [toks[i + 1] if i + 1 >= n_prompt else -100 for i in range(len(inputs))]
    return toks, inputs, targets


# ---------------------------------------------------------------- the fixtures
def fixtures():
    common = dict(
        initializer_range=0.15,
        attention_dropout=0.0,
        output_router_logits=False,
        use_cache=False,
        bos_token_id=TOK_BOS,
        eos_token_id=TOK_EOS,
        pad_token_id=None,
    )
    return [
        dict(
            name="deepseek_v3",
            doc="MLA with query compression (q_lora_rank), all layers MoE, one group, "
            "softmax-free sigmoid routing without renormalisation, interleaved RoPE; float32, one file",
            seed=1301,
            cfg=lambda: DeepseekV3Config(
                vocab_size=272, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                q_lora_rank=24, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=12,
                n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2,
                n_group=1, topk_group=1, first_k_dense_replace=0, norm_topk_prob=False,
                routed_scaling_factor=1.0, rope_interleave=True, max_position_embeddings=128,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                rms_norm_eps=1e-6, tie_word_embeddings=False, num_nextn_predict_layers=0, **common),
            bias_std=0.0,
            dtype="float32",
            shard=None,
        ),
        dict(
            name="deepseek_v3_group",
            doc="MLA without query compression (q_proj), first layer dense, group-limited routing "
            "(4 groups of 3, 2 kept, top-3 of 12), nonzero e_score_correction_bias, renormalised, "
            "routed_scaling_factor 2.5, 2 shared experts, YaRN rope_scaling with mscale_all_dim "
            "(as DeepSeek-V3's config.json); saved in bfloat16",
            seed=1302,
            cfg=lambda: DeepseekV3Config(
                vocab_size=264, hidden_size=32, intermediate_size=48, moe_intermediate_size=8,
                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                q_lora_rank=None, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16,
                n_routed_experts=12, n_shared_experts=2, num_experts_per_tok=3,
                n_group=4, topk_group=2, first_k_dense_replace=1, norm_topk_prob=True,
                routed_scaling_factor=2.5, rope_interleave=True, max_position_embeddings=256,
                rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                              "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
                rope_theta=10000.0,
                rms_norm_eps=1e-6, tie_word_embeddings=False, num_nextn_predict_layers=0, **common),
            bias_std=0.1,
            dtype="bfloat16",
            shard=None,
        ),
        dict(
            name="qwen3_moe",
            doc="GQA (4 query / 2 kv heads, head_dim 16 != hidden/heads), q_norm/k_norm, layer 1 dense "
            "(mlp_only_layers), softmax top-2 renormalised, tied embeddings; saved in bfloat16",
            seed=1303,
            cfg=lambda: Qwen3MoeConfig(
                vocab_size=262, hidden_size=32, intermediate_size=48, moe_intermediate_size=16,
                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, decoder_sparse_step=1,
                mlp_only_layers=[1], max_position_embeddings=256,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                router_aux_loss_coef=0.001, **common),
            bias_std=0.0,
            dtype="bfloat16",
            shard=None,
        ),
        dict(
            name="mixtral",
            doc="plain Mixtral: GQA (4/2 heads), softmax top-2 of 4 renormalised; float32, sharded "
            "(model-0000k-of-0000n.safetensors + model.safetensors.index.json)",
            seed=1304,
            cfg=lambda: MixtralConfig(
                vocab_size=264, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                max_position_embeddings=256, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
                rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None,
                router_jitter_noise=0.0, router_aux_loss_coef=0.02, **common),
            bias_std=0.0,
            dtype="float32",
            shard="40KB",
        ),
    ]


# ---------------------------------------------------------------- helpers
def load_kw():
    return dict(attn_implementation="eager", experts_implementation="eager")


def randomize(model, fx):
    """Norm weights (initialised to ones) get noise so that a C loader that ignores one fails;
    DeepSeek's e_score_correction_bias gets N(0, bias_std)."""
    g = torch.Generator().manual_seed(fx["seed"] + 7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias") and fx["bias_std"] > 0:
                b.copy_(fx["bias_std"] * torch.randn(b.shape, generator=g))


def file_manifest(d):
    """Every saved file: {file: {key: [dtype, shape]}} (+ index.json's weight_map size)."""
    out = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors") and f != "expected.safetensors":
            with safe_open(os.path.join(d, f), "pt") as sf:
                meta = sf.metadata()
                keys = {}
                for k in sorted(sf.keys()):
                    sl = sf.get_slice(k)
                    keys[k] = [sl.get_dtype(), list(sl.get_shape())]
            out[f] = {"metadata": meta, "tensors": keys}
    return out


def read_checkpoint(d):
    """All tensors of a saved checkpoint (single file or sharded), by key."""
    t = {}
    for f in sorted(os.listdir(d)):
        if f.endswith(".safetensors") and f != "expected.safetensors":
            with safe_open(os.path.join(d, f), "pt") as sf:
                for k in sf.keys():
                    t[k] = sf.get_tensor(k)
    return t


def routing_hooks(model, store):
    """Record each router's (logits, weights, indices) output and its selection margin."""
    hooks = []
    for name, mod in model.named_modules():
        if name.endswith("mlp.gate") and hasattr(mod, "top_k"):
            layer = int(name.split(".")[2])

            def hook(m, inp, out, layer=layer):
                logits, w, idx = out
                store.setdefault(layer, []).append((logits.detach(), w.detach(), idx.detach(), inp[0].detach()))

            hooks.append(mod.register_forward_hook(hook))
    return hooks


def selection_margins(model, fx_name, store):
    """The smallest gap, over tokens and MoE layers, between the last chosen and the first
    rejected score (and, for DeepSeek's groups, between the last kept and first dropped group
    score): a C engine in float32 must choose the same experts, so this must not be tiny."""
    cfg = model.config
    worst = {"expert": math.inf, "group": math.inf}
    for layer, recs in store.items():
        gate = model.model.layers[layer].mlp.gate
        for logits, w, idx, x in recs:
            logits = logits.float()
            if cfg.model_type == "deepseek_v3":
                s = logits.sigmoid() + gate.e_score_correction_bias.float()
                E, G = s.shape[-1], gate.num_group
                gs = s.view(-1, G, E // G).topk(2, dim=-1)[0].sum(-1)
                if gate.topk_group < G:
                    srt = gs.sort(dim=-1, descending=True)[0]
                    worst["group"] = min(worst["group"], (srt[:, gate.topk_group - 1] - srt[:, gate.topk_group]).min().item())
                keep = torch.zeros_like(gs).scatter_(1, gs.topk(gate.topk_group, dim=-1)[1], 1)
                s = s.masked_fill(~keep.repeat_interleave(E // G, dim=-1).bool(), -math.inf)
            else:
                s = logits.softmax(-1)
            srt = s.sort(dim=-1, descending=True)[0]
            k = gate.top_k
            worst["expert"] = min(worst["expert"], (srt[:, k - 1] - srt[:, k]).min().item())
    return worst


def run_examples(model, record):
    """Forward+backward of every example (batch 1, no padding); returns loss, logits, grads."""
    model.zero_grad(set_to_none=True)
    encs = [encode(q, a) for q, a in EXAMPLES]
    n_targets = sum(sum(t >= 0 for t in e[2]) for e in encs)
    total = 0.0
    per = []
    store = {}
    hooks = routing_hooks(model, store) if record is not None else []
    for k, (toks, inputs, targets) in enumerate(encs):
        ids = torch.tensor([inputs])
        tg = torch.tensor([targets])
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        logits = out.logits[0].float()
        s = F.cross_entropy(logits, tg[0], ignore_index=-100, reduction="sum")
        (s / n_targets).backward()
        total += s.item()
        per.append({"question": EXAMPLES[k][0], "answer": EXAMPLES[k][1], "len": len(toks),
                    "n_targets": int((tg >= 0).sum()), "ce_sum": s.item()})
        if record is not None:
            record[f"ex{k}.tokens"] = torch.tensor(toks, dtype=torch.int64)
            record[f"ex{k}.input_ids"] = ids[0].clone()
            record[f"ex{k}.targets"] = tg[0].clone()
            record[f"ex{k}.logits"] = logits.detach().clone().contiguous()
            for j, h in enumerate(out.hidden_states):
                record[f"ex{k}.hidden.{j}"] = h[0].detach().float().clone().contiguous()
            for layer, recs in store.items():
                _, w, idx, _ = recs[k]
                record[f"ex{k}.route.{layer}.idx"] = idx.to(torch.int64).clone()
                record[f"ex{k}.route.{layer}.w"] = w.float().clone()
    for h in hooks:
        h.remove()
    return total / n_targets, n_targets, per, store


def hf_loss_check(model):
    """transformers' ForCausalLMLoss on the full sequences, summed the same way: the labels
    are the full token list with -100 over the prompt (it shifts internally)."""
    encs = [encode(q, a) for q, a in EXAMPLES]
    n = sum(sum(t >= 0 for t in e[2]) for e in encs)
    tot = 0.0
    with torch.no_grad():
        for toks, inputs, targets in encs:
            labels = torch.tensor([[-100] + targets])  # position i+1 of the full sequence
            out = model(input_ids=torch.tensor([toks]), labels=labels, num_items_in_batch=torch.tensor(n))
            tot += out.loss.item()
    return tot


def grads_as_checkpoint(model, ckpt_keys, tmp):
    """Gradients named and shaped as the checkpoint's keys: a copy of the model whose
    parameters hold their gradients is saved with save_pretrained, so transformers' own
    reverse conversion (fused experts -> per-expert tensors, tied weights) names them."""
    gm = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32, **load_kw())
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in gm.named_parameters():
            src = params[name]
            p.copy_(src.grad if src.grad is not None else torch.zeros_like(src))
        for name, b in gm.named_buffers():
            b.fill_(float("nan"))  # buffers are not parameters: dropped below
    d = os.path.join(tmp, "grads")
    gm.save_pretrained(d, safe_serialization=True)
    g = read_checkpoint(d)
    shutil.rmtree(d)
    buffers = [k for k, v in g.items() if v.is_floating_point() and torch.isnan(v).all()]
    for k in buffers:
        del g[k]
    missing = set(ckpt_keys) - set(g) - set(buffers)
    extra = set(g) - set(ckpt_keys)
    assert not missing and not extra, (missing, extra)
    return {f"grad.{k}": v.float().contiguous() for k, v in g.items()}, buffers


def check_grad_layout(model, grads):
    """The per-expert gradients must be the slices of the fused parameter's gradient:
    gate_up_proj[e] = cat(gate_proj_e (w1), up_proj_e (w3)) along dim 0; down_proj[e] = w2."""
    for name, p in model.named_parameters():
        if name.endswith("experts.gate_up_proj"):
            pre = name[: -len("gate_up_proj")]
            I = p.shape[1] // 2
            for e in range(p.shape[0]):
                if model.config.model_type == "mixtral":
                    pre2 = pre.replace(".mlp.", ".block_sparse_moe.")
                    gk, uk, dk = (f"grad.{pre2}{e}.w{i}.weight" for i in (1, 3, 2))
                else:
                    gk, uk, dk = (f"grad.{pre}{e}.{n}_proj.weight" for n in ("gate", "up", "down"))
                assert torch.equal(grads[gk], p.grad[e, :I]), gk
                assert torch.equal(grads[uk], p.grad[e, I:]), uk
                dp = dict(model.named_parameters())[pre + "down_proj"]
                assert torch.equal(grads[dk], dp.grad[e]), dk


def make(fx, out_root):
    name = fx["name"]
    out = os.path.join(out_root, name)
    if os.path.isdir(out):
        shutil.rmtree(out)
    torch.manual_seed(fx["seed"])
    cfg = fx["cfg"]()
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, **load_kw())
    randomize(model, fx)
    model.eval()  # routing and attention as at inference: no dropout, no jitter
    info = {"fixture": name, "doc": fx["doc"], "seed": fx["seed"], "saved_dtype": fx["dtype"],
            "transformers": transformers.__version__, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        if fx["dtype"] == "bfloat16":
            # as a bf16 checkpoint is made: load in bf16 (keeps _keep_in_fp32_modules_strict in f32)
            model.save_pretrained(os.path.join(tmp, "f32"), safe_serialization=True)
            mb = AutoModelForCausalLM.from_pretrained(os.path.join(tmp, "f32"), dtype=torch.bfloat16, **load_kw())
            mb.save_pretrained(out, safe_serialization=True)
            info["in_memory_dtypes"] = sorted({f"{n}:{p.dtype}" for n, p in mb.state_dict().items()
                                               if p.dtype != torch.bfloat16})
            del mb
        elif fx["shard"]:
            model.save_pretrained(out, safe_serialization=True, max_shard_size=fx["shard"])
        else:
            model.save_pretrained(out, safe_serialization=True)

        info["files"] = sorted(os.listdir(out))
        info["checkpoint"] = file_manifest(out)
        with open(os.path.join(out, "config.json")) as f:
            info["config_json"] = json.load(f)
        ckpt = read_checkpoint(out)

        # the reference: what was saved, reloaded as float32 by transformers
        ref = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, **load_kw())
        ref.eval()
        # transformers' in-memory names and shapes (fused experts) for the record
        info["in_memory_parameters"] = {n: list(p.shape) for n, p in ref.named_parameters()}
        info["in_memory_buffers"] = {n: list(b.shape) for n, b in ref.named_buffers()}
        record = {}
        loss, n_targets, per, store = run_examples(ref, record)
        info["loss"] = loss
        info["loss_averaging"] = ("sum over examples and target tokens of -log softmax(logits)[target], divided by "
                                  "the total number of target tokens (answer bytes + <eos>); each example run "
                                  "alone (batch 1, no padding, no attention mask), float32")
        info["n_targets"] = n_targets
        info["examples"] = per
        info["hf_loss_function_check"] = hf_loss_check(ref)
        assert abs(info["hf_loss_function_check"] - loss) < 1e-5 * max(1.0, abs(loss)), info["hf_loss_function_check"]
        grads, buffers = grads_as_checkpoint(ref, list(ckpt), tmp)
        check_grad_layout(ref, grads)
        info["buffers_in_checkpoint"] = buffers
        info["selection_margin"] = selection_margins(ref, name, store)
        if min(info["selection_margin"].values()) < MIN_MARGIN:
            raise NearTie(info["selection_margin"])
        info["experts_used"] = {str(layer): sorted({int(i) for r in recs for i in r[2].flatten()})
                                for layer, recs in store.items()}
        record.update(grads)

        # sanity 1: the in-memory original (f32) gives the same logits as the reload (f32 fixtures)
        diffs = {}
        with torch.no_grad():
            for k, (q, a) in enumerate(EXAMPLES):
                ids = record[f"ex{k}.input_ids"][None]
                if fx["dtype"] == "float32":
                    d = (model(input_ids=ids).logits[0] - record[f"ex{k}.logits"]).abs().max().item()
                    diffs.setdefault("original_vs_reload", []).append(d)
        # sanity 2: a fresh from_pretrained with transformers' default kernels (sdpa, grouped_mm)
        dflt = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        dflt.eval()
        info["default_implementations"] = {"attn": dflt.config._attn_implementation,
                                           "experts": dflt.config._experts_implementation}
        with torch.no_grad():
            for k in range(len(EXAMPLES)):
                ids = record[f"ex{k}.input_ids"][None]
                d = (dflt(input_ids=ids).logits[0] - record[f"ex{k}.logits"]).abs().max().item()
                diffs.setdefault("default_kernels_vs_eager", []).append(d)
        info["logit_max_abs_diff"] = diffs
        if "original_vs_reload" in diffs:
            assert max(diffs["original_vs_reload"]) == 0.0, diffs
        assert max(diffs["default_kernels_vs_eager"]) < 1e-4, diffs

    # one metadata key: safetensors writes several in a random order, and the file should be
    # byte-for-byte reproducible (the rest is in expected.json)
    save_file(record, os.path.join(out, "expected.safetensors"), metadata={"loss": repr(loss)})
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(info, f, indent=1, sort_keys=False)
        f.write("\n")
    return info


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(1)
    transformers.utils.logging.disable_progress_bar()
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    for fx in fixtures():
        if args.only and fx["name"] not in args.only:
            continue
        base = fx["seed"]
        for attempt in range(50):
            fx["seed"] = base + 1000 * attempt
            try:
                info = make(fx, args.out)
                break
            except NearTie as e:
                print(f"{fx['name']}: seed {fx['seed']} has a near-tie in routing {e}; next seed", file=sys.stderr)
        else:
            raise SystemExit(f"{fx['name']}: no seed without near-ties")
        print(f"{fx['name']:18s} loss {info['loss']:.6f} over {info['n_targets']} targets; files {info['files']}; "
              f"margins {info['selection_margin']}; max |dlogit| {info['logit_max_abs_diff']}")


if __name__ == "__main__":
    sys.exit(main())
