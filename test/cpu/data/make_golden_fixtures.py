#!/usr/bin/env python3
"""Golden values for pgolf's CPU reference, computed with PyTorch.

The model below is written for this project and follows the semantics of the Parameter Golf
reference `train_gpt.py` (GPT, Block, CausalSelfAttention, MLP, Rotary, Muon, the Adam groups):
RMSNorm without weight (eps = float32 epsilon), resid_mix with x0, per-head q/k RMSNorm, half-split
RoPE, q_gain, causal GQA attention, ReLU² MLP, attn/mlp scales, U-Net skips (LIFO), tied
embedding head, logit softcap, cross-entropy. It runs in float32 on the CPU (no autocast, no
compile) so that pgolf's float32/float64 oracle can be compared tightly.

Output: one safetensors file with the configuration in its metadata and
  param.<name>            initial parameters (reference state_dict names)
  batch.ids, batch.targets            (B, T) int32
  out.logits              softcapped logits (B·T, V) of the initial parameters
  out.loss                scalar mean cross-entropy
  grad.<name>             gradients of out.loss
  train.batch<k>.ids/.targets, train.loss   three optimizer steps (Muon + Adam groups)
  final_fp32ns.<name>     parameters after the steps, Newton–Schulz in float32
  final_bf16ns.<name>     the same with Newton–Schulz in bfloat16, as the reference runs it

Run (needs torch, numpy, safetensors):  python make_golden_fixtures.py golden_tiny.safetensors
"""

import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

CONFIG = dict(vocab=48, layers=4, dim=16, heads=2, kv_heads=1, mlp_mult=2, seq=16, batch=2,
              rope_base=10000.0, softcap=30.0, qk_gain_init=1.5)
CONTROL = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weights")
LR = dict(tied_embed=0.05, matrix=0.04, scalar=0.04)
BETAS, ADAM_EPS = (0.9, 0.95), 1e-8
MUON_STEPS = 5


def param_shapes(c):
    d, hd = c["dim"], c["dim"] // c["heads"]
    kv = c["kv_heads"] * hd
    n_skip = min(c["layers"] // 2, c["layers"] - c["layers"] // 2)
    shapes = {"skip_weights": (n_skip, d), "tok_emb.weight": (c["vocab"], d)}
    for i in range(c["layers"]):
        p = f"blocks.{i}."
        shapes.update({p + "attn_scale": (d,), p + "mlp_scale": (d,), p + "resid_mix": (2, d),
                       p + "attn.q_gain": (c["heads"],), p + "attn.c_q.weight": (d, d),
                       p + "attn.c_k.weight": (kv, d), p + "attn.c_v.weight": (kv, d),
                       p + "attn.proj.weight": (d, d), p + "mlp.fc.weight": (c["mlp_mult"] * d, d),
                       p + "mlp.proj.weight": (d, c["mlp_mult"] * d)})
    return shapes


def initial_params(c, gen):
    """Random but well-scaled values; every tensor is non-zero so that every gradient path is live."""
    out = {}
    for name, shape in param_shapes(c).items():
        if name == "tok_emb.weight":
            t = torch.randn(shape, generator=gen) * 0.5
        elif name.endswith("resid_mix"):
            t = torch.stack((torch.ones(shape[1]), torch.zeros(shape[1]))) + 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith("q_gain"):
            t = c["qk_gain_init"] + 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1 or name == "skip_weights":
            t = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        else:
            bound = 1.0 / math.sqrt(shape[1])
            t = (torch.rand(shape, generator=gen) * 2 - 1) * bound
        out[name] = t.float().contiguous()
    return out


def rms(x):
    return F.rms_norm(x, (x.size(-1),), eps=torch.finfo(torch.float32).eps)


def rope(x, base):
    t_len, hd = x.size(-2), x.size(-1)
    inv_freq = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(t_len, dtype=torch.float32), inv_freq)
    cos, sin = freqs.cos()[None, None], freqs.sin()[None, None]
    h = hd // 2
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat((x1 * cos + x2 * sin, -x1 * sin + x2 * cos), dim=-1)


def forward(p, ids, targets, c):
    b, t = ids.shape
    d, nh, nkv = c["dim"], c["heads"], c["kv_heads"]
    hd = d // nh
    x = rms(F.embedding(ids, p["tok_emb.weight"]))
    x0 = x
    n_enc = c["layers"] // 2
    skips = []
    for i in range(c["layers"]):
        pre = f"blocks.{i}."
        if i >= n_enc and skips:
            x = x + p["skip_weights"][i - n_enc][None, None] * skips.pop()
        mix = p[pre + "resid_mix"]
        x = mix[0][None, None] * x + mix[1][None, None] * x0
        h = rms(x)
        q = F.linear(h, p[pre + "attn.c_q.weight"]).reshape(b, t, nh, hd).transpose(1, 2)
        k = F.linear(h, p[pre + "attn.c_k.weight"]).reshape(b, t, nkv, hd).transpose(1, 2)
        v = F.linear(h, p[pre + "attn.c_v.weight"]).reshape(b, t, nkv, hd).transpose(1, 2)
        q = rope(rms(q), c["rope_base"]) * p[pre + "attn.q_gain"][None, :, None, None]
        k = rope(rms(k), c["rope_base"])
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=nkv != nh)
        y = F.linear(y.transpose(1, 2).reshape(b, t, d), p[pre + "attn.proj.weight"])
        x = x + p[pre + "attn_scale"][None, None] * y
        m = F.linear(torch.relu(F.linear(rms(x), p[pre + "mlp.fc.weight"])).square(), p[pre + "mlp.proj.weight"])
        x = x + p[pre + "mlp_scale"][None, None] * m
        if i < n_enc:
            skips.append(x)
    z = F.linear(rms(x).reshape(-1, d), p["tok_emb.weight"])
    logits = c["softcap"] * torch.tanh(z / c["softcap"])
    return F.cross_entropy(logits.float(), targets.reshape(-1)), logits


def newton_schulz5(g, steps, dtype):
    a, b, cc = (3.4445, -4.7750, 2.0315)
    x = g.to(dtype)
    x = x / (x.norm() + 1e-7)
    tr = g.size(0) > g.size(1)
    if tr:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        bm = b * s + cc * s @ s
        x = a * x + bm @ x
    return x.T if tr else x


def train_steps(p0, batches, c, ns_dtype):
    p = {k: v.clone().requires_grad_(True) for k, v in p0.items()}
    muon_buf, adam_m, adam_v = {}, {}, {}
    losses = []
    for step, (ids, tgt) in enumerate(batches):
        for v in p.values():
            v.grad = None
        loss, _ = forward(p, ids, tgt, c)
        loss.backward()
        losses.append(loss.item())
        mu = (1 - min(step / 500, 1.0)) * 0.85 + min(step / 500, 1.0) * 0.95
        with torch.no_grad():
            for name, w in p.items():
                g = w.grad
                matrix = name.startswith("blocks.") and w.ndim == 2 and not any(s in name for s in CONTROL)
                if matrix:
                    buf = muon_buf.setdefault(name, torch.zeros_like(g))
                    buf.mul_(mu).add_(g)
                    u = newton_schulz5(g.add(buf, alpha=mu), MUON_STEPS, ns_dtype)
                    u = u * max(1, u.size(0) / u.size(1)) ** 0.5
                    w.add_(u.to(torch.float32), alpha=-LR["matrix"])
                else:
                    lr = LR["tied_embed"] if name == "tok_emb.weight" else LR["scalar"]
                    m = adam_m.setdefault(name, torch.zeros_like(g))
                    v = adam_v.setdefault(name, torch.zeros_like(g))
                    m.mul_(BETAS[0]).add_(g, alpha=1 - BETAS[0])
                    v.mul_(BETAS[1]).addcmul_(g, g, value=1 - BETAS[1])
                    t = step + 1
                    denom = v.sqrt() / math.sqrt(1 - BETAS[1] ** t) + ADAM_EPS
                    w.addcdiv_(m, denom, value=-lr / (1 - BETAS[0] ** t))
    return {k: v.detach().clone() for k, v in p.items()}, losses


def main(path):
    c = CONFIG
    gen = torch.Generator().manual_seed(20240520)
    p0 = initial_params(c, gen)

    def batch():
        ids = torch.randint(0, c["vocab"], (c["batch"], c["seq"]), generator=gen)
        tgt = torch.randint(0, c["vocab"], (c["batch"], c["seq"]), generator=gen)
        return ids, tgt

    ids, tgt = batch()
    p = {k: v.clone().requires_grad_(True) for k, v in p0.items()}
    loss, logits = forward(p, ids, tgt, c)
    loss.backward()
    out = {"param." + k: v for k, v in p0.items()}
    out.update({"grad." + k: v.grad.detach().clone() for k, v in p.items()})
    out["batch.ids"] = ids.to(torch.int32).contiguous()
    out["batch.targets"] = tgt.to(torch.int32).contiguous()
    out["out.logits"] = logits.detach().contiguous()
    out["out.loss"] = loss.detach().reshape(1)

    batches = [batch() for _ in range(3)]
    for i, (bi, bt) in enumerate(batches):
        out[f"train.batch{i}.ids"] = bi.to(torch.int32).contiguous()
        out[f"train.batch{i}.targets"] = bt.to(torch.int32).contiguous()
    final32, losses = train_steps(p0, batches, c, torch.float32)
    final16, losses16 = train_steps(p0, batches, c, torch.bfloat16)
    out["train.loss"] = torch.tensor(losses, dtype=torch.float32)
    out["train.loss_bf16ns"] = torch.tensor(losses16, dtype=torch.float32)
    out.update({"final_fp32ns." + k: v for k, v in final32.items()})
    out.update({"final_bf16ns." + k: v for k, v in final16.items()})
    meta = {k: str(v) for k, v in c.items()}
    meta["torch_version"] = torch.__version__
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)
    print(f"wrote {path}: {len(out)} tensors, loss {loss.item():.6f}, train losses {losses}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "golden_tiny.safetensors")
