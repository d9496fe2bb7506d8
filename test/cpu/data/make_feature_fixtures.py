#!/usr/bin/env python3
"""Golden values for pgolf's feature switches, computed with PyTorch.

For eight tiny models, five carrying the feature sets of the five seed configurations and three
the variants no seed uses (the `kTiny*` and `kVariant*` configurations of
test/cpu/tiny_seed_configs.hpp), this script computes the loss and every gradient
with a PyTorch re-statement (written for this project) of the records' modules: BigramHash,
EngramLite, SmearGate, U-Net skips with sigmoid gates, partial RoPE, LN scale, XSA, value residual,
value embeddings, gated attention, LeakyReLU². Parameters are not stored: both sides fill tensor j
(state_dict order) with 0.5·sin(0.37·(i+1)·(j+1) + 0.1·j), so the fixture also checks that the two
sides enumerate the same tensors in the same order with the same shapes.

Run (needs torch and safetensors):  python make_feature_fixtures.py golden_features.safetensors
"""

import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

COMMON = dict(vocab=40, dim=16, heads=4, kv_heads=2, mlp_mult=2, softcap=5.0, rope_base=10000.0, bos=1, gate_window=3)
SEEDS = {
    "seed_a": dict(layers=4, hash="bigram", buckets=23, hash_dim=6, bigram_start="zero_prev"),
    "seed_b": dict(layers=4, hash="bigram", buckets=23, hash_dim=6, smear="post"),
    "seed_c": dict(layers=5, hash="bigram", buckets=23, hash_dim=6, smear="post", rope_dims=2, ln_scale=True),
    "seed_d": dict(layers=5, hash="engram", buckets=7, hash_dim=3, orders=2, gated_skips=True, ve_layers=[3, 4], ve_dim=5,
                   smear="post", xsa_layers=[0, 1, 2, 3, 4], rope_dims=2, ln_scale=True, leaky=0.3),
    "seed_e": dict(layers=4, hash="bigram", buckets=23, hash_dim=6, smear="post", value_residual="lambda",
                   attn_gate="bias", xsa_layers=[2, 3], rope_dims=2, ln_scale=True, leaky=0.5),
    # The variants no seed uses (kVariant1..3 of tiny_seed_configs.hpp).
    "variant_1": dict(layers=3, smear="pre", smear_bos_fix=True, hash="engram", buckets=5, hash_dim=8, orders=1,
                      attn_gate="output"),
    "variant_2": dict(layers=4, smear="input", smear_bos_fix=True, attn_gate="full", value_residual="alpha",
                      ve_layers=[0, 2], ve_dim=8),
    "variant_3": dict(layers=4, attn_gate="sparse", sparse_scale=0.5, gated_skips=True, value_residual="lambda",
                      ve_layers=[0, 3], ve_dim=5, xsa_layers=[1, 2], leaky=0.3),
}
BATCH, SEQ = 2, 7


def shapes(c):
    """The state_dict names and shapes, in pgolf's order (model/param_layout.hpp for_each_param)."""
    d, H, hd = c["dim"], c["heads"], c["dim"] // c["heads"]
    kv, hidden, L = c["kv_heads"] * hd, c["mlp_mult"] * c["dim"], c["layers"]
    n_skip = min(L // 2, L - L // 2)
    out = [("skip_weights", (n_skip, d))]
    if c.get("gated_skips"):
        out.append(("skip_gates", (n_skip, d)))
    if c.get("smear") == "input":
        out.append(("smear_lambda", (1,)))
    out.append(("tok_emb.weight", (c["vocab"], d)))
    if c.get("hash") == "bigram":
        out += [("bigram.scale", ()), ("bigram.embed.weight", (c["buckets"], c["hash_dim"]))]
        if c["hash_dim"] != d:
            out.append(("bigram.proj.weight", (d, c["hash_dim"])))
    elif c.get("hash") == "engram":
        slots = 2 * c["orders"]
        out += [("bigram.ngram_gate", (d,)), ("bigram.embed.weight", (slots * c["buckets"], c["hash_dim"]))]
        if slots * c["hash_dim"] != d:
            out.append(("bigram.proj.weight", (d, slots * c["hash_dim"])))
    if c.get("smear") in ("pre", "post"):
        out.append(("smear.gate", (d,)))
    elif c.get("smear") == "input":
        out.append(("smear_gate.weight", (1, c["gate_window"])))
    for i in range(L):
        b = f"blocks.{i}."
        out += [(b + "attn_scale", (d,)), (b + "mlp_scale", (d,)), (b + "resid_mix", (2, d)), (b + "attn.q_gain", (H,))]
        if c.get("value_residual") == "lambda":
            out.append((b + "attn.vr_lambda", (2,)))
        if c.get("attn_gate") == "bias":
            out += [(b + "attn.attn_gate.weight", (H, d)), (b + "attn.attn_gate.bias", (H,))]
        elif c.get("attn_gate") == "output":
            out.append((b + "attn.attn_gate_proj.weight", (H, c["gate_window"])))
        elif c.get("attn_gate") == "full":
            out.append((b + "attn.attn_gate_w", (H, d)))
        elif c.get("attn_gate") == "sparse":
            out.append((b + "attn.attn_gate_w", (H, c["gate_window"])))
        out += [(b + "attn.c_q.weight", (d, d)), (b + "attn.c_k.weight", (kv, d)), (b + "attn.c_v.weight", (kv, d)),
                (b + "attn.proj.weight", (d, d)), (b + "mlp.fc.weight", (hidden, d)), (b + "mlp.proj.weight", (d, hidden))]
    if c.get("ve_layers"):
        out += [("ve_shared.scale", ()), ("ve_shared.embed.weight", (c["vocab"], c["ve_dim"]))]
        if c["ve_dim"] != kv:
            out.append(("ve_shared.proj.weight", (kv, c["ve_dim"])))
        out += [(f"ve_layer_scales.{k}", (1,)) for k in range(len(c["ve_layers"]))]
    if c.get("value_residual") == "alpha":
        out += [(f"vrl_alphas.{i - 1}", ()) for i in range(1, L)]
    return out


def params(c):
    p = {}
    for j, (name, shape) in enumerate(shapes(c)):
        n = math.prod(shape) if shape else 1
        i = torch.arange(n, dtype=torch.float64)
        p[name] = (0.5 * torch.sin(0.37 * (i + 1) * (j + 1) + 0.1 * j)).reshape(shape).requires_grad_(True)
    return p


def rms(x):
    return F.rms_norm(x, (x.size(-1),), eps=torch.finfo(torch.float32).eps)


def rope(x, base, rd):
    t_len = x.size(1)
    inv = 1.0 / (base ** (torch.arange(0, rd, 2, dtype=torch.float64) / rd))
    fr = torch.outer(torch.arange(t_len, dtype=torch.float64), inv)
    cos, sin = fr.cos()[None, :, None, :], fr.sin()[None, :, None, :]
    xr, xp = x[..., :rd], x[..., rd:]
    h = rd // 2
    x1, x2 = xr[..., :h], xr[..., h:]
    return torch.cat((x1 * cos + x2 * sin, -x1 * sin + x2 * cos, xp), dim=-1)


def forward(p, ids, tgt, c):
    B, T = ids.shape
    d, H, Hkv = c["dim"], c["heads"], c["kv_heads"]
    hd = d // H
    L, rd = c["layers"], c.get("rope_dims") or d // H
    x = F.embedding(ids, p["tok_emb.weight"])
    if c.get("hash") == "bigram":
        t = ids.to(torch.int32)
        mod = c["buckets"] - 1
        h = torch.empty_like(t)
        # PR #436 (seed A) pads prev with 0 at position 0; the canonical BigramHash reserves bucket mod.
        h[:, 0] = 36313 * t[:, 0] % mod if c.get("bigram_start") == "zero_prev" else mod
        h[:, 1:] = torch.bitwise_xor(36313 * t[:, 1:], 27191 * t[:, :-1]) % mod
        e = F.embedding(h.long(), p["bigram.embed.weight"])
        if "bigram.proj.weight" in p:
            e = F.linear(e, p["bigram.proj.weight"])
        x = x + e * p["bigram.scale"]
    elif c.get("hash") == "engram":
        Bk = c["buckets"]
        prev = F.pad(ids[:, :-1], (1, 0), value=0)
        pp = F.pad(prev[:, :-1], (1, 0), value=0)
        idx = [(prev * 1009 + ids) % Bk, ((prev * 2719 + 314159) ^ (ids * 3137)) % Bk + Bk]
        if c["orders"] >= 2:
            idx += [((pp * 36313) ^ (prev * 27191) ^ (ids * 4903)) % Bk + 2 * Bk,
                    ((pp * 7919) ^ (prev * 4391) ^ (ids * 6151)) % Bk + 3 * Bk]
        flat = F.embedding(torch.stack(idx, dim=-1), p["bigram.embed.weight"]).reshape(B, T, -1)
        out = F.linear(flat, p["bigram.proj.weight"]) if "bigram.proj.weight" in p else flat
        x = x + out * torch.sigmoid(p["bigram.ngram_gate"])
    blocked = F.pad((ids[:, 1:] == c["bos"]) if c.get("smear_bos_fix") else torch.zeros_like(ids[:, 1:], dtype=torch.bool),
                    (1, 0), value=True)[..., None]  # no smear at a sequence start (or into a BOS token)
    if c.get("smear") == "pre":  # v1: g·x_t + (1 − g)·x_{t−1}, before the norm
        g = torch.sigmoid(p["smear.gate"])[None, None, :]
        prev = F.pad(x[:, :-1], (0, 0, 1, 0)).masked_fill(blocked, 0.0)
        x = g * x + (1 - g) * prev
    elif c.get("smear") == "input":  # v3: x_t += λ σ(W x_t[:w]) x_{t−1}
        g = p["smear_lambda"] * torch.sigmoid(F.linear(x[:, 1:, : c["gate_window"]], p["smear_gate.weight"]))
        g = g.masked_fill(blocked[:, 1:], 0.0)
        x = torch.cat([x[:, :1], x[:, 1:] + g * x[:, :-1]], dim=1)
    x = rms(x)
    if c.get("smear") == "post":
        g = torch.sigmoid(p["smear.gate"])[None, None, :]
        x = torch.lerp(x, F.pad(x[:, :-1], (0, 0, 1, 0)), g)
    x0 = x
    ve_base = None
    if c.get("ve_layers"):
        ve_base = F.embedding(ids, p["ve_shared.embed.weight"])
        if "ve_shared.proj.weight" in p:
            ve_base = F.linear(ve_base, p["ve_shared.proj.weight"])
        ve_base = ve_base * p["ve_shared.scale"]
    n_enc = L // 2
    skips, v0 = [], None
    for i in range(L):
        b = f"blocks.{i}."
        if i >= n_enc and skips:
            s, w = skips.pop(), p["skip_weights"][i - n_enc]
            if c.get("gated_skips"):
                x = torch.lerp(w * s, x, torch.sigmoid(p["skip_gates"][i - n_enc]))
            else:
                x = x + w * s
        mix = p[b + "resid_mix"]
        x = mix[0] * x + mix[1] * x0
        f = 1.0 / math.sqrt(i + 1) if c.get("ln_scale") else 1.0
        hin = rms(x) * f
        q = F.linear(hin, p[b + "attn.c_q.weight"]).reshape(B, T, H, hd)
        k = F.linear(hin, p[b + "attn.c_k.weight"]).reshape(B, T, Hkv, hd)
        v = F.linear(hin, p[b + "attn.c_v.weight"])
        if c.get("value_residual") == "alpha" and i == 0:
            v0 = v  # layer 0's raw c_v output
        if c.get("ve_layers") and i in c["ve_layers"]:
            v = v + ve_base * p[f"ve_layer_scales.{c['ve_layers'].index(i)}"]
        if c.get("value_residual") == "lambda":
            raw = v
            if v0 is not None:
                lam = p[b + "attn.vr_lambda"]
                v = lam[0] * v0 + lam[1] * v
            else:
                v0 = raw
        if c.get("value_residual") == "alpha" and i > 0:
            v = v + torch.sigmoid(p[f"vrl_alphas.{i - 1}"]) * v0
        v = v.reshape(B, T, Hkv, hd)
        q, k = rms(q), rms(k)
        q = rope(q, c["rope_base"], rd) * p[b + "attn.q_gain"][None, None, :, None]
        k = rope(k, c["rope_base"], rd)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                                           enable_gqa=True).transpose(1, 2)
        if i in c.get("xsa_layers", []):
            yg = y.reshape(B, T, Hkv, H // Hkv, hd)
            vn = F.normalize(v, dim=-1).unsqueeze(-2)
            y = (yg - (yg * vn).sum(-1, keepdim=True) * vn).reshape(B, T, H, hd)
        w = c["gate_window"]
        if c.get("attn_gate") == "bias":
            y = y * torch.sigmoid(F.linear(hin, p[b + "attn.attn_gate.weight"], p[b + "attn.attn_gate.bias"]))[..., None]
        elif c.get("attn_gate") == "output":
            y = y * (2 * torch.sigmoid(F.linear(hin[..., :w], p[b + "attn.attn_gate_proj.weight"])))[..., None]
        elif c.get("attn_gate") == "full":
            y = y * torch.sigmoid(F.linear(hin, p[b + "attn.attn_gate_w"]))[..., None]
        elif c.get("attn_gate") == "sparse":
            y = y * torch.sigmoid(c["sparse_scale"] * F.linear(hin[..., :w], p[b + "attn.attn_gate_w"]))[..., None]
        x = x + p[b + "attn_scale"] * F.linear(y.reshape(B, T, d), p[b + "attn.proj.weight"])
        u = F.linear(rms(x) * f, p[b + "mlp.fc.weight"])
        a = F.leaky_relu(u, c["leaky"]) if c.get("leaky") else torch.relu(u)
        x = x + p[b + "mlp_scale"] * F.linear(a.square(), p[b + "mlp.proj.weight"])
        if i < n_enc:
            skips.append(x)
    z = F.linear(rms(x).reshape(-1, d), p["tok_emb.weight"])
    logits = c["softcap"] * torch.tanh(z / c["softcap"])
    return F.cross_entropy(logits, tgt.reshape(-1))


def main(path):
    gen = torch.Generator().manual_seed(20240520)
    ids = torch.randint(0, COMMON["vocab"], (BATCH, SEQ), generator=gen)
    ids[0, 4] = COMMON["bos"]  # as the C++ gradient tests place a BOS inside the first sequence
    tgt = torch.randint(0, COMMON["vocab"], (BATCH, SEQ), generator=gen)
    out = {"ids": ids.to(torch.int32), "targets": tgt.to(torch.int32)}
    for seed, extra in SEEDS.items():
        c = dict(COMMON, **extra)
        p = params(c)
        loss = forward(p, ids, tgt, c)
        loss.backward()
        out[f"{seed}.loss"] = loss.detach().reshape(1)  # float64: the loss is compared tightly
        for name, t in p.items():
            g = t.grad if t.grad is not None else torch.zeros_like(t)  # an unused tensor (layer 0's vr_lambda)
            out[f"{seed}.grad.{name}"] = g.detach().float().clone()
        print(f"{seed}: loss {loss.item():.10f}, {len(p)} tensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata={"torch_version": torch.__version__})


if __name__ == "__main__":
    torch.set_default_dtype(torch.float64)
    main(sys.argv[1] if len(sys.argv) > 1 else "golden_features.safetensors")
