"""PyTorch reference implementation of moe_v1 (SPEC §1-§3), written independently of the C
engine, used as the oracle in `make test` (Debian's python3-torch under /usr/bin/python3).

It reads a checkpoint directory written by `moe init`/`moe train` (config.json +
model.safetensors, parsed here with numpy), a question/answer file, and computes the
training loss (cross-entropy + balance losses) and every parameter gradient by autograd,
in float64. It also replays AdamW training steps for the optimizer test.

    python3 moe_ref.py grad  --ckpt DIR --data FILE --limit N --out G.npz
    python3 moe_ref.py train --ckpt DIR --data FILE --steps S --batch B [--lr ...]
"""
import argparse
import json
import math
import struct
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
PAD, BOS, SEP, EOS = 256, 257, 258, 259

DEFAULTS = dict(vocab_size=260, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=0, head_dim=0, intermediate_size=0, moe_intermediate_size=0,
                n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1,
                first_k_dense_replace=0, scoring_func="softmax", topk_method="greedy", n_group=1,
                topk_group=1, norm_topk_prob=True, routed_scaling_factor=1.0, rms_norm_eps=1e-5,
                rope_theta=10000.0, max_position_embeddings=2048, tie_word_embeddings=False,
                aux_loss_alpha=0.0, aux_scope="batch", bias_update_speed=0.0, capacity_factor=0.0,
                model_type="moe_v1", q_lora_rank=0, kv_lora_rank=0, qk_nope_head_dim=0, qk_rope_head_dim=0,
                v_head_dim=0, qk_norm=False, rope_interleave=False, sandwich_norm=False, num_mtp_layers=0,
                mtp_loss_weight=0.3, init_method="pytorch")
# openPangu-Ultra-MoE's names for the same keys
PANGU_KEYS = dict(num_routed_experts="n_routed_experts", num_shared_experts="n_shared_experts",
                  num_dense_layers="first_k_dense_replace", attention_q_lora_dim="q_lora_rank",
                  attention_kv_lora_dim="kv_lora_rank", attention_qk_dim="qk_nope_head_dim",
                  attention_qk_rope_dim="qk_rope_head_dim", attention_v_dim="v_head_dim")


# ------------------------------------------------------------------ files

def read_safetensors(path):
    with open(path, "rb") as f:
        buf = f.read()
    (hlen,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + hlen])
    data = buf[8 + hlen:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        b, e = t["data_offsets"]
        if t["dtype"] == "F32":
            arr = np.frombuffer(data[b:e], dtype="<f4")
        elif t["dtype"] == "BF16":
            u = np.frombuffer(data[b:e], dtype="<u2").astype(np.uint32) << 16
            arr = u.view(np.float32)
        else:
            raise ValueError(f"{path}: dtype {t['dtype']}")
        out[name] = arr.reshape(t["shape"]).copy()
    return out, header.get("__metadata__", {})


def write_safetensors(path, tensors, metadata=None):
    header, off, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr, dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
        blobs.append(a.tobytes())
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_config(path):
    with open(path) as f:
        c = json.load(f)
    cfg = dict(DEFAULTS)
    if c.get("model_type") == "pangu_ultra_moe":
        cfg["scoring_func"] = "sigmoid"
        c = {PANGU_KEYS.get(k, k): v for k, v in c.items()}
    if c.get("model_type") == "deepseek_v3":   # its defaults where they differ from moe_v1's
        cfg.update(scoring_func="sigmoid", topk_method="group_limited", rope_interleave=True)
    for k, v in c.items():
        if k in cfg:
            cfg[k] = v
    cfg["q_lora_rank"] = cfg["q_lora_rank"] or 0
    if cfg["topk_method"] == "noaux_tc":   # DeepSeek-V3's name for group-limited selection
        cfg["topk_method"] = "group_limited"
    if not cfg["num_key_value_heads"]:
        cfg["num_key_value_heads"] = cfg["num_attention_heads"]
    if not cfg["head_dim"]:
        cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]
    if not cfg["intermediate_size"]:
        cfg["intermediate_size"] = 4 * cfg["hidden_size"]
    if not cfg["moe_intermediate_size"]:
        cfg["moe_intermediate_size"] = cfg["hidden_size"]
    return cfg


def read_qa(path, limit=0):
    """Alternating question/answer lines, or JSON lines with question/answer."""
    with open(path, "rb") as f:
        raw = f.read()
    lines = [l[:-1] if l.endswith(b"\r") else l for l in raw.split(b"\n")]
    if lines and lines[-1] == b"":
        lines.pop()
    ex = []
    if path.endswith(".jsonl") or path.endswith(".json"):
        for l in lines:
            if l.strip():
                o = json.loads(l)
                ex.append((o["question"].encode(), o["answer"].encode()))
    else:
        for i in range(0, len(lines) - 1, 2):
            ex.append((lines[i], lines[i + 1]))
    return ex[:limit] if limit else ex


def encode(q, a):
    seq = [BOS] + list(q) + [SEP] + list(a) + [EOS]
    n_prompt = len(q) + 2
    inputs = seq[:-1]
    targets = [seq[i + 1] if i + 1 >= n_prompt else -1 for i in range(len(inputs))]
    return inputs, targets


# ------------------------------------------------------------------ model

class Ref:
    def __init__(self, cfg, tensors):
        self.c = cfg
        self.p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=("e_score_correction_bias" not in k))
                  for k, v in tensors.items()}
        self.bias = {}
        for l in range(cfg["num_hidden_layers"] + cfg["num_mtp_layers"]):
            k = f"model.layers.{l}.mlp.gate.e_score_correction_bias"
            if self.is_moe(l):
                self.bias[l] = self.p.pop(k).detach() if k in self.p else torch.zeros(cfg["n_routed_experts"])

    def is_moe(self, l):
        return l >= self.c["first_k_dense_replace"] and self.c["n_routed_experts"] > 0

    def rms(self, x, w, eps=None):
        eps = self.c["rms_norm_eps"] if eps is None else eps
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w

    def rope(self, x, pos):   # x [N, h, hd]
        hd = x.shape[-1]
        if self.c["rope_interleave"]:   # as the reference library: de-interleave, then rotate half
            x = x.view(*x.shape[:-1], hd // 2, 2).transpose(-1, -2).reshape(x.shape)
        inv = self.c["rope_theta"] ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = pos[:, None].double() * inv[None, :]
        cos = torch.cat([ang.cos(), ang.cos()], -1)[:, None, :]
        sin = torch.cat([ang.sin(), ang.sin()], -1)[:, None, :]
        x1, x2 = x[..., :hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    def attn(self, x, l, pos, segs):
        c, P = self.c, self.p
        pre = f"model.layers.{l}.self_attn."
        H, Hkv, hd = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        N = x.shape[0]
        if c["kv_lora_rank"]:
            q, k, v, scale = self.mla_qkv(x, l, pos)
            hv = v.shape[-1]
        else:
            q = (x @ P[pre + "q_proj.weight"].T).view(N, H, hd)
            k = (x @ P[pre + "k_proj.weight"].T).view(N, Hkv, hd)
            if c["qk_norm"]:
                q, k = self.rms(q, P[pre + "q_norm.weight"]), self.rms(k, P[pre + "k_norm.weight"])
            q, k = self.rope(q, pos), self.rope(k, pos)
            v = (x @ P[pre + "v_proj.weight"].T).view(N, Hkv, hd)
            rep = H // Hkv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
            scale, hv = 1 / math.sqrt(hd), hd
        outs = []
        for s0, s1 in segs:   # examples never attend to each other
            qs, ks, vs = q[s0:s1].transpose(0, 1), k[s0:s1].transpose(0, 1), v[s0:s1].transpose(0, 1)
            sc = qs @ ks.transpose(1, 2) * scale
            T = s1 - s0
            mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
            sc = sc.masked_fill(mask, float("-inf"))
            outs.append((torch.softmax(sc, -1) @ vs).transpose(0, 1).reshape(T, H * hv))
        o = torch.cat(outs, 0)
        return o @ P[pre + "o_proj.weight"].T

    def mla_qkv(self, x, l, pos):
        """multi-head latent attention (DeepSeek-V3): q, k [N,H,nope+rope], v [N,H,v], the scale"""
        c, P = self.c, self.p
        pre = f"model.layers.{l}.self_attn."
        H, nope, rd, vd = c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
        kvr, N = c["kv_lora_rank"], x.shape[0]
        # DeepSeek-V3's latent norms keep RMSNorm's default eps; Pangu's take rms_norm_eps
        eps = 1e-6 if c["model_type"] == "deepseek_v3" else None
        if c["q_lora_rank"]:
            q = self.rms(x @ P[pre + "q_a_proj.weight"].T, P[pre + "q_a_layernorm.weight"], eps) @ P[pre + "q_b_proj.weight"].T
        else:
            q = x @ P[pre + "q_proj.weight"].T
        q = q.view(N, H, nope + rd)
        ckv = x @ P[pre + "kv_a_proj_with_mqa.weight"].T
        kv = (self.rms(ckv[:, :kvr], P[pre + "kv_a_layernorm.weight"], eps) @ P[pre + "kv_b_proj.weight"].T).view(N, H, nope + vd)
        kp = self.rope(ckv[:, kvr:].reshape(N, 1, rd), pos).expand(N, H, rd)
        q = torch.cat([q[..., :nope], self.rope(q[..., nope:], pos)], -1)
        k = torch.cat([kv[..., :nope], kp], -1)
        return q, k, kv[..., nope:], 1 / math.sqrt(nope + rd)

    @staticmethod
    def swiglu(x, g, u, d):
        return (torch.nn.functional.silu(x @ g.T) * (x @ u.T)) @ d.T

    def select(self, sb):
        """top-k with ties to the lower index, per topk_method; sb [N,E] numpy float32."""
        c = self.c
        E, K = c["n_routed_experts"], c["num_experts_per_tok"]
        N = sb.shape[0]
        sel = np.zeros((N, K), dtype=np.int64)

        def topm(v, m, allowed=None):
            idx = [i for i in range(len(v)) if allowed is None or allowed[i]]
            idx.sort(key=lambda i: (-v[i], i))
            return idx[:m]

        for n in range(N):
            v = sb[n]
            if c["topk_method"] == "greedy":
                sel[n] = topm(v, K)
            elif c["topk_method"] == "group_limited":
                G = c["n_group"]
                per = E // G
                gs = []
                for g in range(G):
                    t2 = topm(v[g * per:(g + 1) * per], 2)
                    gs.append(np.float32(v[g * per + t2[0]]) + np.float32(v[g * per + t2[1]]))
                keep = topm(np.array(gs, dtype=np.float32), c["topk_group"])
                allowed = [(i // per) in keep for i in range(E)]
                sel[n] = topm(v, K, allowed)
            else:   # moge
                G = c["n_group"]
                per, m = E // G, K // G
                row = []
                for g in range(G):
                    row += [g * per + i for i in topm(v[g * per:(g + 1) * per], m)]
                sel[n] = row
        return sel

    def moe(self, x, l, segs, train, stats):
        c, P = self.c, self.p
        pre = f"model.layers.{l}.mlp."
        E, K = c["n_routed_experts"], c["num_experts_per_tok"]
        N = x.shape[0]
        z = x @ P[pre + "gate.weight"].T
        s = torch.softmax(z, -1) if c["scoring_func"] == "softmax" else torch.sigmoid(z)
        sb = (s.detach().float() + self.bias[l].float()).numpy()
        sel = torch.tensor(self.select(sb))
        w = s.gather(1, sel)
        if c["norm_topk_prob"]:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * c["routed_scaling_factor"]
        keep = torch.ones(N, K, dtype=torch.bool)
        load = torch.bincount(sel.flatten(), minlength=E)
        if train and c["capacity_factor"] > 0:
            cap = math.ceil(c["capacity_factor"] * N * K / E)
            wd = w.detach().float().numpy()
            for e in range(E):
                cand = [(-wd[n, k], n, k) for n in range(N) for k in range(K) if sel[n, k] == e]
                cand.sort()
                # the capacity boundary is ill-posed where the last kept and the first dropped
                # weights are equal or nearly so (the same token state in two sequences gives
                # equal weights in exact arithmetic; float32 rounding then orders them either way)
                if len(cand) > cap and cand[cap][0] - cand[cap - 1][0] <= 1e-5 * -cand[cap - 1][0]:
                    stats["capacity_ties"] = stats.get("capacity_ties", 0) + 1
                for _, n, k in cand[cap:]:
                    keep[n, k] = False
        out = torch.zeros_like(x)
        for e in range(E):
            m = (sel == e) & keep
            tok, slot = m.nonzero(as_tuple=True)
            if len(tok) == 0:
                continue
            ep = pre + f"experts.{e}."
            y = self.swiglu(x[tok], P[ep + "gate_proj.weight"], P[ep + "up_proj.weight"], P[ep + "down_proj.weight"])
            out = out.index_add(0, tok, w[tok, slot][:, None] * y)
        if c["n_shared_experts"] > 0:
            sp = pre + "shared_experts."
            out = out + self.swiglu(x, P[sp + "gate_proj.weight"], P[sp + "up_proj.weight"], P[sp + "down_proj.weight"])
        aux = torch.zeros(())
        if train and c["aux_loss_alpha"] > 0:
            sp_ = s if c["scoring_func"] == "softmax" else s / s.sum(-1, keepdim=True)
            units = segs if c["aux_scope"] == "sequence" else [(0, N)]
            for a0, a1 in units:
                n = a1 - a0
                f = torch.bincount(sel[a0:a1].flatten(), minlength=E).double() / (n * K)
                Pm = sp_[a0:a1].mean(0)
                aux = aux + c["aux_loss_alpha"] * E * (f * Pm).sum()
            if c["aux_scope"] == "sequence":
                aux = aux / len(segs)
        stats.setdefault("load", {})[l] = load
        return out, aux

    def loss(self, examples, train=True):
        c, P = self.c, self.p
        toks, pos, tg, segs = [], [], [], []
        for q, a in examples:
            inp, t = encode(q, a)
            segs.append((len(toks), len(toks) + len(inp)))
            toks += inp
            pos += list(range(len(inp)))
            tg += t
        toks, pos, tg = torch.tensor(toks), torch.tensor(pos), torch.tensor(tg)
        x = P["model.embed_tokens.weight"][toks]
        aux = torch.zeros(())
        stats = {}
        L, M = c["num_hidden_layers"], c["num_mtp_layers"] if train else 0
        for l in range(L):
            x, a = self.layer(x, l, pos, segs, train, stats)
            aux = aux + a
        W = P["model.embed_tokens.weight"] if c["tie_word_embeddings"] else P["lm_head.weight"]
        m = tg >= 0
        logits = self.rms(x, P["model.norm.weight"])[m] @ W.T
        ce = torch.nn.functional.cross_entropy(logits, tg[m], reduction="mean")
        # multi-token prediction: module k reads the stream at depth k-1 and the token k ahead,
        # predicts the one after; its cross-entropy sum over the main loss's target count
        mtp = torch.zeros(())
        for k in range(1, M + 1):
            l = L + k - 1
            pre = f"model.layers.{l}."
            tk, tt = [], []
            for s0, s1 in segs:
                for n in range(s0, s1):
                    j = n + k
                    tk.append(int(toks[j]) if j < s1 else int(tg[j - 1]) if j == s1 and tg[j - 1] >= 0 else 0)
                    tt.append(int(tg[j]) if j < s1 else -1)
            tk, tt = torch.tensor(tk), torch.tensor(tt)
            e = self.rms(P["model.embed_tokens.weight"][tk], P[pre + "enorm.weight"])
            xin = torch.cat([e, self.rms(x, P[pre + "hnorm.weight"])], -1) @ P[pre + "eh_proj.weight"].T
            x, a = self.layer(xin, l, pos, segs, train, stats)
            aux = aux + a
            mk = tt >= 0
            lg = self.rms(x, P[pre + "shared_head.norm.weight"])[mk] @ W.T
            mtp = mtp + torch.nn.functional.cross_entropy(lg, tt[mk], reduction="sum") / int(m.sum())
        if M:
            mtp = mtp / M
        return ce + aux + c["mtp_loss_weight"] * mtp, ce, aux, stats

    def layer(self, x, l, pos, segs, train, stats):
        c, P = self.c, self.p
        pre = f"model.layers.{l}."
        sw = c["sandwich_norm"]   # depth-scaled sandwich norm: a norm after attention and after the FFN
        a = self.attn(self.rms(x, P[pre + "input_layernorm.weight"]), l, pos, segs)
        h = x + (self.rms(a, P[pre + "post_attention_layernorm.weight"]) if sw else a)
        xn = self.rms(h, P[pre + ("pre_mlp_layernorm.weight" if sw else "post_attention_layernorm.weight")])
        aux = torch.zeros(())
        if self.is_moe(l):
            f, aux = self.moe(xn, l, segs, train, stats)
        else:
            f = self.swiglu(xn, P[pre + "mlp.gate_proj.weight"], P[pre + "mlp.up_proj.weight"],
                            P[pre + "mlp.down_proj.weight"])
        return h + (self.rms(f, P[pre + "post_mlp_layernorm.weight"]) if sw else f), aux


def load_ref(ckpt):
    cfg = load_config(ckpt + "/config.json")
    tensors, _ = read_safetensors(ckpt + "/model.safetensors")
    return Ref(cfg, tensors)


def cmd_grad(a):
    ref = load_ref(a.ckpt)
    ex = read_qa(a.data, a.limit)
    loss, ce, aux, st = ref.loss(ex, train=True)
    loss.backward()
    grads = {k: (v.grad.numpy() if v.grad is not None else np.zeros(v.shape)) for k, v in ref.p.items()}
    np.savez(a.out, **grads)
    ref2 = load_ref(a.ckpt)
    with torch.no_grad():
        _, eval_ce, _, _ = ref2.loss(ex, train=False)
    print(json.dumps({"loss": loss.item(), "ce": ce.item(), "aux": aux.item(), "eval_loss": eval_ce.item(),
                      "capacity_ties": st.get("capacity_ties", 0)}))


def cmd_train(a):
    """AdamW (torch.optim.AdamW), global-norm clipping, warm-up + cosine, bias update:
    one step per global batch of `batch` examples taken in file order."""
    ref = load_ref(a.ckpt)
    ex = read_qa(a.data)
    params = list(ref.p.values())
    decay = [p for p in params if p.dim() >= 2]
    nodecay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(a.beta1, a.beta2), eps=1e-8)
    c = ref.c
    losses = []
    for step in range(1, a.steps + 1):
        if a.warmup > 0 and step <= a.warmup:
            lr = a.lr * step / a.warmup
        elif a.decay_steps > a.warmup:
            p = min(1.0, (step - a.warmup) / (a.decay_steps - a.warmup))
            lr = a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * p))
        else:
            lr = a.lr
        for g in opt.param_groups:
            g["lr"] = lr
        batch = [ex[((step - 1) * a.batch + i) % len(ex)] for i in range(a.batch)]
        opt.zero_grad()
        loss, ce, aux, stats = ref.loss(batch, train=True)
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(params, a.clip)
        opt.step()
        if c["bias_update_speed"] > 0:
            for l, load in stats["load"].items():
                d = load.double().mean() - load.double()
                ref.bias[l] = (ref.bias[l].float() + c["bias_update_speed"] * torch.sign(d).float()).double()
        losses.append(loss.item())
    print(json.dumps({"losses": losses}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("grad")
    g.add_argument("--ckpt", required=True)
    g.add_argument("--data", required=True)
    g.add_argument("--limit", type=int, required=True)
    g.add_argument("--out", required=True)
    t = sub.add_parser("train")
    t.add_argument("--ckpt", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--min-lr", dest="min_lr", type=float, default=0.0)
    t.add_argument("--warmup", type=int, default=0)
    t.add_argument("--decay-steps", dest="decay_steps", type=int, default=0)
    t.add_argument("--weight-decay", dest="weight_decay", type=float, default=0.0)
    t.add_argument("--beta1", type=float, default=0.9)
    t.add_argument("--beta2", type=float, default=0.95)
    t.add_argument("--clip", type=float, default=1.0)
    a = ap.parse_args()
    {"grad": cmd_grad, "train": cmd_train}[a.cmd](a)


if __name__ == "__main__":
    main()
