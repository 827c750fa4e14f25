"""PyTorch baseline for `moe bench`: the same moe_v1 model (SPEC §1), written as a user of
PyTorch would (nn.Linear, a loop over experts with index_add_, scaled-dot-product attention
where the version has it), trained on random tokens with torch.optim.AdamW, float32.

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


def cfg_load(path):
    with open(path) as f:
        c = json.load(f)
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

        def rot(t):
            t1, t2 = t[..., : self.hd // 2], t[..., self.hd // 2:]
            return t * cos + torch.cat([-t2, t1], -1) * sin
        q, k = rot(q), rot(k)
        if self.Hkv != self.H:
            k = k.repeat_interleave(self.H // self.Hkv, 1)
            v = v.repeat_interleave(self.H // self.Hkv, 1)
        if hasattr(F, "scaled_dot_product_attention"):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = q @ k.transpose(-1, -2) / math.sqrt(self.hd)
            s = s.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
            o = torch.softmax(s, -1) @ v
        return self.o(o.transpose(1, 2).reshape(B, T, self.H * self.hd))


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, E, Fe = c["hidden_size"], c["n_routed_experts"], c["moe_intermediate_size"]
        self.K, self.E, self.c = c["num_experts_per_tok"], E, c
        self.gate = nn.Linear(D, E, bias=False)
        self.experts = nn.ModuleList([SwiGLU(D, Fe) for _ in range(E)])
        self.shared = SwiGLU(D, Fe * c["n_shared_experts"]) if c["n_shared_experts"] else None

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        s = torch.softmax(self.gate(x), -1)
        w, sel = torch.topk(s, self.K, -1)
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
        return out.view(shape)


class Block(nn.Module):
    def __init__(self, c, moe):
        super().__init__()
        self.n1, self.n2 = RMSNorm(c["hidden_size"], c["rms_norm_eps"]), RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.attn = Attention(c)
        self.ffn = MoE(c) if moe else SwiGLU(c["hidden_size"], c["intermediate_size"])

    def forward(self, x, cos, sin):
        h = x + self.attn(self.n1(x), cos, sin)
        return h + self.ffn(self.n2(h))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.blocks = nn.ModuleList([Block(c, l >= c["first_k_dense_replace"]) for l in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)

    def forward(self, tokens, targets):
        T, hd = tokens.shape[1], self.c["head_dim"]
        inv = self.c["rope_theta"] ** (-torch.arange(0, hd, 2).float() / hd)
        ang = torch.arange(T).float()[:, None] * inv[None]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        x = self.embed(tokens)
        for b in self.blocks:
            x = b(x, cos, sin)
        logits = self.head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


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
