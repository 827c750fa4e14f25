#!/usr/bin/env python3
"""An independent re-implementation of the three families' forward pass, written from
docs/HF_FAMILIES.md and working directly on the checkpoint's tensors (per-expert keys as on
disk), to check that document against transformers' own outputs in the fixtures.

Needs only numpy and torch (Debian's torch 1.13 is enough; no transformers, no safetensors):
    python3 tests/hf/ref_math.py [FIXTURE_DIR ...]     (default: every tests/hf/fixtures/*)
For each fixture: logits of every example vs expected.safetensors, the loss, and, by autograd
on the checkpoint tensors themselves, the gradient of every checkpoint key vs grad.<key>.
Prints 'N passed, N failed'.
"""
import glob
import json
import math
import os
import struct
import sys

import numpy as np
import torch

# ------------------------------------------------------------------ safetensors, by hand
DT = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "BF16": np.uint16}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for k, h in header.items():
        a, b = h["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=DT[h["dtype"]]).reshape(h["shape"])
        if h["dtype"] == "BF16":  # bf16 -> f32: the 16 bits are the high half of an f32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[k] = torch.from_numpy(arr.copy())
    return out, meta


def read_checkpoint(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    t = {}
    for f in files:
        t.update(read_safetensors(os.path.join(d, f))[0])
    return {k: v.float() for k, v in t.items()}


# ------------------------------------------------------------------ building blocks
def rms_norm(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def silu_glu(x, wg, wu, wd):
    return (torch.nn.functional.silu(x @ wg.T) * (x @ wu.T)) @ wd.T


def rope_params(c, dim):
    """inv_freq [dim/2] and the cos/sin multiplier for rope_parameters (or legacy rope_theta/rope_scaling)."""
    rp = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
    theta = rp.get("rope_theta", c.get("rope_theta", 1e6 if c["model_type"] == "mixtral" else 1e4))
    kind = rp.get("rope_type", rp.get("type", "default"))
    pos = theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    if kind == "default":
        return 1.0 / pos, 1.0
    assert kind == "yarn", kind
    factor = rp["factor"]
    omax = rp.get("original_max_position_embeddings", c["max_position_embeddings"])

    def get_mscale(s, m=1.0):
        return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

    ms, msa = rp.get("mscale"), rp.get("mscale_all_dim")
    attn_factor = rp.get("attention_factor")
    if attn_factor is None:
        attn_factor = get_mscale(factor, ms) / get_mscale(factor, msa) if (ms and msa) else get_mscale(factor)
    bf, bs = rp.get("beta_fast") or 32, rp.get("beta_slow") or 1

    def corr_dim(rot):
        return dim * math.log(omax / (rot * 2 * math.pi)) / (2 * math.log(theta))

    lo, hi = corr_dim(bf), corr_dim(bs)
    if rp.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - lo) / (hi - lo)).clamp(0, 1)
    extra = 1 - ramp  # 1: keep the original frequency (high frequencies), 0: divide it by factor
    inv = (1.0 / (factor * pos)) * (1 - extra) + (1.0 / pos) * extra
    return inv, attn_factor


def yarn_softmax_scale(c, scale):
    rp = dict(c.get("rope_parameters") or c.get("rope_scaling") or {})
    if rp.get("rope_type", rp.get("type", "default")) != "default" and rp.get("mscale_all_dim"):
        m = 0.1 * rp["mscale_all_dim"] * math.log(rp["factor"]) + 1.0 if rp["factor"] > 1 else 1.0
        scale = scale * m * m
    return scale


def apply_rope(x, inv_freq, mult, interleave):
    """x [..., T, d]; rotate_half pairs (i, i + d/2); interleave pairs (2i, 2i+1) (the output of
    the interleaved form is laid out de-interleaved, [evens' results | odds' results], as
    transformers does; q and k get the same layout so q.k is the same as rotating in place)."""
    T = x.shape[-2]
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv_freq[None, :]  # [T, d/2]
    cos, sin = ang.cos() * mult, ang.sin() * mult
    if interleave:
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attend(q, k, v, scale):
    """q [H, T, d], k [H, T, d], v [H, T, dv]: causal softmax attention -> [T, H*dv]."""
    T = q.shape[1]
    s = (q @ k.transpose(1, 2)) * scale
    s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    o = s.softmax(-1) @ v
    return o.transpose(0, 1).reshape(T, -1)


# ------------------------------------------------------------------ the families
def forward(c, W, ids):
    mt = c["model_type"]
    eps = c["rms_norm_eps"]
    H, nh = c["hidden_size"], c["num_attention_heads"]
    x = W["model.embed_tokens.weight"][ids]
    L = c["num_hidden_layers"]
    routes = {}
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms_norm(x, W[p + "input_layernorm.weight"], eps)
        x = x + (mla(c, W, p + "self_attn.", h) if mt == "deepseek_v3" else gqa(c, W, p + "self_attn.", h))
        h = rms_norm(x, W[p + "post_attention_layernorm.weight"], eps)
        x = x + mlp(c, W, p, l, h, routes)
    x = rms_norm(x, W["model.norm.weight"], eps)
    head = W.get("lm_head.weight")
    if head is None or c.get("tie_word_embeddings"):
        head = W["model.embed_tokens.weight"]
    return x @ head.T, routes


def gqa(c, W, p, h):
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    d = c.get("head_dim") or c["hidden_size"] // nh
    T = h.shape[0]
    q = (h @ W[p + "q_proj.weight"].T + W.get(p + "q_proj.bias", 0)).view(T, nh, d).transpose(0, 1)
    k = (h @ W[p + "k_proj.weight"].T + W.get(p + "k_proj.bias", 0)).view(T, nkv, d).transpose(0, 1)
    v = (h @ W[p + "v_proj.weight"].T + W.get(p + "v_proj.bias", 0)).view(T, nkv, d).transpose(0, 1)
    if p + "q_norm.weight" in W:  # qwen3: per head, over head_dim, before RoPE
        q = rms_norm(q, W[p + "q_norm.weight"], c["rms_norm_eps"])
        k = rms_norm(k, W[p + "k_norm.weight"], c["rms_norm_eps"])
    inv, mult = rope_params(c, d)
    q, k = apply_rope(q, inv, mult, False), apply_rope(k, inv, mult, False)
    rep = nh // nkv  # query head i uses kv head i // rep
    k, v = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
    if c.get("sliding_window") is not None and (c["model_type"] == "mixtral" or c.get("use_sliding_window")):
        assert h.shape[0] <= c["sliding_window"], "sliding window not implemented here"
    o = attend(q, k, v, d ** -0.5)
    return o @ W[p + "o_proj.weight"].T + W.get(p + "o_proj.bias", 0)


def mla(c, W, p, h):
    nh = c["num_attention_heads"]
    dn, dr, dv, r = c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"], c["kv_lora_rank"]
    T = h.shape[0]
    eps = 1e-6  # q_a_layernorm and kv_a_layernorm use DeepseekV3RMSNorm's default eps, not rms_norm_eps
    if c.get("q_lora_rank") is None:
        q = h @ W[p + "q_proj.weight"].T
    else:
        q = rms_norm(h @ W[p + "q_a_proj.weight"].T + W.get(p + "q_a_proj.bias", 0), W[p + "q_a_layernorm.weight"], eps)
        q = q @ W[p + "q_b_proj.weight"].T
    q = q.view(T, nh, dn + dr).transpose(0, 1)
    q_nope, q_rot = q[..., :dn], q[..., dn:]
    ckv = h @ W[p + "kv_a_proj_with_mqa.weight"].T + W.get(p + "kv_a_proj_with_mqa.bias", 0)
    latent, k_rot = ckv[:, :r], ckv[:, r:]  # [T, r], [T, dr]: one rope key shared by all heads
    latent = rms_norm(latent, W[p + "kv_a_layernorm.weight"], eps)
    kv = (latent @ W[p + "kv_b_proj.weight"].T).view(T, nh, dn + dv).transpose(0, 1)
    k_nope, v = kv[..., :dn], kv[..., dn:]
    inv, mult = rope_params(c, dr)
    il = c.get("rope_interleave", True)
    q_rot = apply_rope(q_rot, inv, mult, il)
    k_rot = apply_rope(k_rot[None], inv, mult, il).expand(nh, T, dr)
    qq = torch.cat([q_nope, q_rot], -1)
    kk = torch.cat([k_nope, k_rot], -1)
    scale = yarn_softmax_scale(c, (dn + dr) ** -0.5)
    o = attend(qq, kk, v, scale)
    return o @ W[p + "o_proj.weight"].T + W.get(p + "o_proj.bias", 0)


def mlp(c, W, p, l, h, routes):
    mt = c["model_type"]
    if mt == "deepseek_v3":
        if l < c["first_k_dense_replace"]:
            return silu_glu(h, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"], W[p + "mlp.down_proj.weight"])
        E, k = c["n_routed_experts"], c["num_experts_per_tok"]
        G, TG = c["n_group"], c["topk_group"]
        s = (h @ W[p + "mlp.gate.weight"].T).sigmoid()
        choice = s.detach() + W[p + "mlp.gate.e_score_correction_bias"]  # bias: selection only
        gscore = choice.view(-1, G, E // G).topk(2, dim=-1)[0].sum(-1)    # group score: sum of its top 2
        gkeep = torch.zeros_like(gscore).scatter_(1, gscore.topk(TG, dim=-1)[1], 1.0)
        choice = choice.masked_fill(gkeep.repeat_interleave(E // G, dim=-1) == 0, float("-inf"))
        idx = choice.topk(k, dim=-1)[1]
        w = s.gather(1, idx)  # weights: the sigmoid scores WITHOUT the bias
        if c["norm_topk_prob"]:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * c["routed_scaling_factor"]
        out = experts(W, p + "mlp.experts.{}.{}_proj.weight", ("gate", "up", "down"), h, idx, w)
        ns = c["n_shared_experts"]
        if ns:
            out = out + silu_glu(h, W[p + "mlp.shared_experts.gate_proj.weight"],
                                 W[p + "mlp.shared_experts.up_proj.weight"], W[p + "mlp.shared_experts.down_proj.weight"])
        routes[l] = (idx, w)
        return out
    if mt == "qwen3_moe":
        E = c.get("num_experts", c.get("num_local_experts"))
        sparse = (l not in (c.get("mlp_only_layers") or [])) and E > 0 and (l + 1) % c["decoder_sparse_step"] == 0
        if not sparse:
            return silu_glu(h, W[p + "mlp.gate_proj.weight"], W[p + "mlp.up_proj.weight"], W[p + "mlp.down_proj.weight"])
        probs = (h @ W[p + "mlp.gate.weight"].T).softmax(-1)
        w, idx = probs.topk(c["num_experts_per_tok"], dim=-1)
        if c["norm_topk_prob"]:
            w = w / w.sum(-1, keepdim=True)
        routes[l] = (idx, w)
        return experts(W, p + "mlp.experts.{}.{}_proj.weight", ("gate", "up", "down"), h, idx, w)
    if mt == "mixtral":
        pre = p + ("block_sparse_moe." if p + "block_sparse_moe.gate.weight" in W else "mlp.")
        probs = (h @ W[pre + "gate.weight"].T).softmax(-1)
        w, idx = probs.topk(c["num_experts_per_tok"], dim=-1)
        w = w / w.sum(-1, keepdim=True)  # always renormalised
        routes[l] = (idx, w)
        return experts(W, pre + "experts.{}.{}.weight", ("w1", "w3", "w2"), h, idx, w)
    raise SystemExit(f"unknown model_type {mt}")


def experts(W, fmt, names, h, idx, w):
    out = torch.zeros_like(h)
    for e in sorted(set(idx.flatten().tolist())):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        y = silu_glu(h[tok], W[fmt.format(e, names[0])], W[fmt.format(e, names[1])], W[fmt.format(e, names[2])])
        out = out.index_add(0, tok, y * w[tok, slot, None])
    return out


# ------------------------------------------------------------------ the check
def check(d):
    c = json.load(open(os.path.join(d, "config.json")))
    W = read_checkpoint(d)
    exp, meta = read_safetensors(os.path.join(d, "expected.safetensors"))
    params = {k: v.clone().requires_grad_(v.is_floating_point() and not k.endswith("e_score_correction_bias"))
              for k, v in W.items()}
    res = []
    n_ex = len([k for k in exp if k.endswith(".input_ids")])
    total, n_t, worst = 0.0, 0, 0.0
    for k in range(n_ex):
        ids = exp[f"ex{k}.input_ids"].long()
        logits, routes = forward(c, params, ids)
        d_log = (logits.detach() - exp[f"ex{k}.logits"]).abs().max().item()
        worst = max(worst, d_log)
        for l, (idx, w) in routes.items():
            want = exp[f"ex{k}.route.{l}.idx"].long()
            same = torch.equal(idx.sort(-1)[0], want.sort(-1)[0])
            res.append((same, f"ex{k} layer {l} routing (the chosen experts)"))
        tg = exp[f"ex{k}.targets"].long()
        s = torch.nn.functional.cross_entropy(logits, tg, ignore_index=-100, reduction="sum")
        total = total + s
        n_t += int((tg >= 0).sum())
    res.append((worst < 1e-4, f"logits max |diff| {worst:.2e}"))
    loss = total / n_t
    want = float(meta["loss"])
    res.append((abs(loss.item() - want) < 1e-5 * max(1, want), f"loss {loss.item():.6f} (expected {want:.6f})"))
    loss.backward()
    gw, gk = 0.0, None
    keys = [k[5:] for k in exp if k.startswith("grad.")]
    for key in keys:
        g = params[key].grad
        g = torch.zeros_like(params[key]) if g is None else g
        r = (g - exp["grad." + key]).abs().max().item() / max(1e-3, exp["grad." + key].abs().max().item())
        if r > gw:
            gw, gk = r, key
    res.append((set(keys) == {k for k, v in params.items() if v.requires_grad},
                f"{len(keys)} gradients = the checkpoint's trainable keys"))
    res.append((gw < 1e-3, f"gradients: worst relative max |diff| {gw:.2e} ({gk})"))
    return res


def main():
    dirs = sys.argv[1:] or sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "*")))
    torch.set_num_threads(1)
    ok = bad = 0
    for d in dirs:
        for good, what in check(d):
            print(f"{'ok  ' if good else 'FAIL'} {os.path.basename(d)}: {what}")
            ok += good
            bad += not good
    print(f"{ok} passed, {bad} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
