"""PyTorch baseline for `moe bench`: the same model as moe.c builds from the config, written as
a user of PyTorch would (nn.Linear, a loop over experts with index_add_, scaled-dot-product
attention where the version has it), trained on random tokens with torch.optim.AdamW, float32.
The families: moe_v1 (SPEC §1), deepseek_v3 (multi-head latent attention with optional query
compression, interleaved RoPE, group-limited sigmoid routing with the correction bias, a
first dense layer) and pangu_ultra_moe (openPangu's key names; MLA, the sandwich norm,
multi-token-prediction modules), as tests/ref/moe_ref.py computes them, batched.

    python bench_torch.py --model CFG.json --batch B --seq T [--steps N] [--threads N] [--compile]

Prints one JSON line: tokens_per_s, step_ms, peak_rss_mb, torch, threads, compile."""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# openPangu's names for DeepSeek's keys (as tests/ref/moe_ref.py)
PANGU_KEYS = dict(num_routed_experts="n_routed_experts", num_shared_experts="n_shared_experts",
                  num_dense_layers="first_k_dense_replace", attention_q_lora_dim="q_lora_rank",
                  attention_kv_lora_dim="kv_lora_rank", attention_qk_dim="qk_nope_head_dim",
                  attention_qk_rope_dim="qk_rope_head_dim", attention_v_dim="v_head_dim")


def cfg_load(path):
    with open(path) as f:
        c = json.load(f)
    family = c.get("model_type", "moe_v1")
    if family == "pangu_ultra_moe":
        c = {PANGU_KEYS.get(k, k): v for k, v in c.items()}
        c.setdefault("scoring_func", "sigmoid")
    if family == "deepseek_v3":   # the reference library's defaults for its own family
        c.setdefault("scoring_func", "sigmoid")
        c.setdefault("topk_method", "group_limited")
        c.setdefault("rope_interleave", True)
        c.setdefault("num_mtp_layers", c.get("num_nextn_predict_layers", 0))
    if c.get("topk_method") == "noaux_tc":
        c["topk_method"] = "group_limited"
    c.setdefault("num_key_value_heads", c["num_attention_heads"])
    c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
    c.setdefault("intermediate_size", 4 * c["hidden_size"])
    c.setdefault("moe_intermediate_size", c["hidden_size"])
    c.setdefault("n_shared_experts", 1)
    c.setdefault("first_k_dense_replace", 0)
    c.setdefault("rms_norm_eps", 1e-5)
    c.setdefault("rope_theta", 10000.0)
    c.setdefault("norm_topk_prob", True)
    c.setdefault("routed_scaling_factor", 1.0)
    c.setdefault("scoring_func", "softmax")
    c.setdefault("topk_method", "greedy")
    c.setdefault("n_group", 1)
    c.setdefault("topk_group", 1)
    c.setdefault("aux_loss_alpha", 0.0)
    c.setdefault("kv_lora_rank", 0)
    c["q_lora_rank"] = c.get("q_lora_rank") or 0
    c.setdefault("rope_interleave", False)
    c.setdefault("sandwich_norm", False)
    c.setdefault("num_mtp_layers", 0)
    c.setdefault("mtp_loss_weight", 0.3)
    c.setdefault("tie_word_embeddings", False)
    c["family"] = family
    return c


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.w = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.w


class SwiGLU(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.g, self.u, self.d = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False), nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.d(F.silu(self.g(x)) * self.u(x))


def rope(t, cos, sin, interleave):
    """rotate-half RoPE over the last dim; interleaved pairs (DeepSeek-V3) are first
    de-interleaved, as the reference library does"""
    hd = t.shape[-1]
    if interleave:
        t = t.unflatten(-1, (hd // 2, 2)).transpose(-1, -2).reshape(t.shape)
    t1, t2 = t[..., : hd // 2], t[..., hd // 2:]
    return t * cos + torch.cat([-t2, t1], -1) * sin


def causal_attention(q, k, v):   # [B, H, T, *]; the scale 1/sqrt(q's head dim)
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    T = q.shape[2]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return torch.softmax(s, -1) @ v


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, self.H, self.Hkv, self.hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.q = nn.Linear(D, self.H * self.hd, bias=False)
        self.k = nn.Linear(D, self.Hkv * self.hd, bias=False)
        self.v = nn.Linear(D, self.Hkv * self.hd, bias=False)
        self.o = nn.Linear(self.H * self.hd, D, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.H, self.hd).transpose(1, 2)
        k = self.k(x).view(B, T, self.Hkv, self.hd).transpose(1, 2)
        v = self.v(x).view(B, T, self.Hkv, self.hd).transpose(1, 2)

        q, k = rope(q, cos, sin, False), rope(k, cos, sin, False)
        if self.Hkv != self.H:
            k = k.repeat_interleave(self.H // self.Hkv, 1)
            v = v.repeat_interleave(self.H // self.Hkv, 1)
        o = causal_attention(q, k, v)
        return self.o(o.transpose(1, 2).reshape(B, T, self.H * self.hd))


class MLA(nn.Module):
    """multi-head latent attention (DeepSeek-V3's modeling, batched): queries through the
    compressed q_a/q_b pair (or q_proj), keys and values expanded from the normalised latent,
    one RoPE key shared by the heads; the softmax scale 1/sqrt(nope + rope)."""

    def __init__(self, c):
        super().__init__()
        D, H = c["hidden_size"], c["num_attention_heads"]
        self.H, self.nope, self.rd, self.vd = H, c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        self.kvr, self.qr, self.interleave = c["kv_lora_rank"], c["q_lora_rank"], c["rope_interleave"]
        qk = self.nope + self.rd
        eps = 1e-6 if c["family"] == "deepseek_v3" else c["rms_norm_eps"]
        if self.qr:
            self.q_a, self.q_a_norm = nn.Linear(D, self.qr, bias=False), RMSNorm(self.qr, eps)
            self.q_b = nn.Linear(self.qr, H * qk, bias=False)
        else:
            self.q = nn.Linear(D, H * qk, bias=False)
        self.kv_a = nn.Linear(D, self.kvr + self.rd, bias=False)
        self.kv_a_norm = RMSNorm(self.kvr, eps)
        self.kv_b = nn.Linear(self.kvr, H * (self.nope + self.vd), bias=False)
        self.o = nn.Linear(H * self.vd, D, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        H, nope, rd = self.H, self.nope, self.rd
        q = self.q_b(self.q_a_norm(self.q_a(x))) if self.qr else self.q(x)
        q = q.view(B, T, H, nope + rd).transpose(1, 2)
        q_nope, q_pe = q.split([nope, rd], -1)
        ckv, k_pe = self.kv_a(x).split([self.kvr, rd], -1)
        kv = self.kv_b(self.kv_a_norm(ckv)).view(B, T, H, nope + self.vd).transpose(1, 2)
        k_nope, v = kv.split([nope, self.vd], -1)
        q_pe = rope(q_pe, cos, sin, self.interleave)
        k_pe = rope(k_pe.view(B, 1, T, rd), cos, sin, self.interleave)
        q = torch.cat([q_nope, q_pe], -1)
        k = torch.cat([k_nope, k_pe.expand(B, H, T, rd)], -1)
        o = causal_attention(q, k, v)
        return self.o(o.transpose(1, 2).reshape(B, T, H * self.vd))


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, E, Fe = c["hidden_size"], c["n_routed_experts"], c["moe_intermediate_size"]
        self.K, self.E, self.c = c["num_experts_per_tok"], E, c
        self.gate = nn.Linear(D, E, bias=False)
        self.experts = nn.ModuleList([SwiGLU(D, Fe) for _ in range(E)])
        self.shared = SwiGLU(D, Fe * c["n_shared_experts"]) if c["n_shared_experts"] else None
        self.register_buffer("bias", torch.zeros(E))   # e_score_correction_bias
        self.aux = None

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        c, E = self.c, self.E
        z = self.gate(x)
        s = torch.softmax(z, -1) if c["scoring_func"] == "softmax" else torch.sigmoid(z)
        with torch.no_grad():   # selection: by score plus the balance bias, per topk_method
            sb = s + self.bias
            if c["topk_method"] == "group_limited":   # the groups with the best top-2 sums
                G = c["n_group"]
                gs = sb.view(-1, G, E // G).topk(2, -1).values.sum(-1)
                keep = torch.zeros_like(gs).scatter_(1, gs.topk(c["topk_group"], -1).indices, 1.0)
                sb = sb.masked_fill(keep.repeat_interleave(E // G, 1) == 0, float("-inf"))
                sel = sb.topk(self.K, -1).indices
            elif c["topk_method"] == "moge":   # K / G from each group
                G = c["n_group"]
                sel = (sb.view(-1, G, E // G).topk(self.K // G, -1).indices +
                       torch.arange(G)[:, None] * (E // G)).view(-1, self.K)
            else:
                sel = sb.topk(self.K, -1).indices
        w = s.gather(1, sel)
        if self.c["norm_topk_prob"]:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * self.c["routed_scaling_factor"]
        out = torch.zeros_like(x)
        flat = sel.reshape(-1)
        order = flat.argsort()
        counts = torch.bincount(flat, minlength=self.E).tolist()
        tok = order // self.K
        wt = w.reshape(-1)[order]
        start = 0
        for e, n in enumerate(counts):
            if n:
                t = tok[start:start + n]
                out.index_add_(0, t, self.experts[e](x[t]) * wt[start:start + n, None])
            start += n
        if self.shared is not None:
            out = out + self.shared(x)
        if c["aux_loss_alpha"] > 0:   # over the whole batch (one unit, as ep_group on one process)
            f = torch.bincount(sel.reshape(-1), minlength=E).float() / sel.numel()
            sp = s if c["scoring_func"] == "softmax" else s / s.sum(-1, keepdim=True)
            self.aux = c["aux_loss_alpha"] * E * (f * sp.mean(0)).sum()
        return out.view(shape)


class Block(nn.Module):
    def __init__(self, c, moe):
        super().__init__()
        D, eps = c["hidden_size"], c["rms_norm_eps"]
        self.n1, self.n2 = RMSNorm(D, eps), RMSNorm(D, eps)
        self.attn = MLA(c) if c["kv_lora_rank"] else Attention(c)
        self.ffn = MoE(c) if moe else SwiGLU(D, c["intermediate_size"])
        # the depth-scaled sandwich norm: a norm after attention and after the FFN
        self.post_attn = RMSNorm(D, eps) if c["sandwich_norm"] else nn.Identity()
        self.post_ffn = RMSNorm(D, eps) if c["sandwich_norm"] else nn.Identity()

    def forward(self, x, cos, sin):
        h = x + self.post_attn(self.attn(self.n1(x), cos, sin))
        return h + self.post_ffn(self.ffn(self.n2(h)))


class MTP(nn.Module):
    """multi-token-prediction module: [enorm(emb(t_{i+k})); hnorm(h_i)] -> eh_proj -> a layer ->
    its norm -> the shared head"""

    def __init__(self, c, moe):
        super().__init__()
        D, eps = c["hidden_size"], c["rms_norm_eps"]
        self.enorm, self.hnorm, self.norm = RMSNorm(D, eps), RMSNorm(D, eps), RMSNorm(D, eps)
        self.eh = nn.Linear(2 * D, D, bias=False)
        self.block = Block(c, moe)

    def forward(self, h, e, cos, sin):
        return self.block(self.eh(torch.cat([self.enorm(e), self.hnorm(h)], -1)), cos, sin)


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        L, M = c["num_hidden_layers"], c["num_mtp_layers"]
        self.embed = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.blocks = nn.ModuleList([Block(c, l >= c["first_k_dense_replace"]) for l in range(L)])
        self.mtp = nn.ModuleList([MTP(c, L + k >= c["first_k_dense_replace"]) for k in range(M)])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
        if c["tie_word_embeddings"]:
            self.head.weight = self.embed.weight

    def forward(self, tokens, targets):
        c = self.c
        T = tokens.shape[1]
        hd = c["qk_rope_head_dim"] if c["kv_lora_rank"] else c["head_dim"]
        inv = c["rope_theta"] ** (-torch.arange(0, hd, 2).float() / hd)
        ang = torch.arange(T).float()[:, None] * inv[None]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x, cos, sin)
        V = c["vocab_size"]
        loss = F.cross_entropy(self.head(self.norm(x)).view(-1, V), targets.reshape(-1))
        # module k reads token i + k (the target k - 1 ahead) and predicts the next one; the
        # last k positions have no target; its sum over the main loss's target count
        mtp, tok, tgt = 0.0, targets, targets
        for k, m in enumerate(self.mtp, 1):
            tgt = torch.cat([tgt[:, 1:], torch.full_like(tgt[:, :1], -100)], 1)
            x = m(x, self.embed(tok), cos, sin)
            mtp = mtp + F.cross_entropy(self.head(m.norm(x)).view(-1, V), tgt.reshape(-1), reduction="sum",
                                        ignore_index=-100) / targets.numel()
            tok = torch.cat([tok[:, 1:], tok[:, -1:]], 1)
        if self.mtp:
            loss = loss + c["mtp_loss_weight"] * mtp / len(self.mtp)
        for mod in self.modules():
            if isinstance(mod, MoE) and mod.aux is not None:
                loss = loss + mod.aux
        return loss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = cfg_load(a.model)
    model = Model(c)
    step_model = torch.compile(model) if a.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(7)
    tok = torch.randint(0, 256, (a.batch, a.seq + 1), generator=g)
    best = float("inf")
    for s in range(a.steps + 1):   # step 0 warms up (and compiles)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = step_model(tok[:, :-1], tok[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if s > 0:
            best = min(best, dt)
    print(json.dumps({"tokens_per_s": a.batch * a.seq / best, "step_ms": best * 1e3,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "torch": torch.__version__, "threads": torch.get_num_threads(), "compile": a.compile}))


if __name__ == "__main__":
    main()
