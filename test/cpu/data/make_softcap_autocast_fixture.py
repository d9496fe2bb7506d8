#!/usr/bin/env python3
"""Golden values for pgolf's emulation of the reference's head under autocast
(cpu::softcap_cross_entropy_forward/backward_autocast), computed with PyTorch's bf16 ops.

The reference (train_gpt.py, GPT.forward) runs, on the head GEMM's bf16 output z:
    logits = logit_softcap * torch.tanh(logits_proj / logit_softcap)
    return F.cross_entropy(logits.float(), targets, reduction="mean")
This script runs exactly those lines on bf16 tensors on the CPU and records what PyTorch rounds:
  z          (N, V) bf16   the raw logits (normal, std 8; every 4th row x4, past the cap)
  targets    (N,)   int32  random, except every 5th row's argmax (p_y -> 1)
  capped     (N, V) bf16   the logits cross_entropy sees
  loss       (N,)   f32    per-row cross-entropy (reduction="none" on the same logits)
  loss_mean  ()     f32    the reference's loss
  dz         (N, V) bf16   d loss_mean / d z through autograd
PyTorch's CPU kernels divide by the Python scalar where its CUDA kernels multiply by the fp32
reciprocal, and use SLEEF's tanh/exp: the C++ test allows for single-ulp differences from those.

Run (needs torch, safetensors):  python make_softcap_autocast_fixture.py softcap_autocast.safetensors
The committed fixture is the CPU's eager run. --device cuda runs the same lines on a GPU, and
--compile runs them through torch.compile as train_gpt.py does (Inductor may skip some of eager
mode's bf16 roundings; docs/reference-parity.md): fixtures for settling which roundings the
reference's GPU run really makes.
"""
import argparse

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

N, V = 32, 1024          # rows, vocabulary (the baseline's)
LOGIT_SOFTCAP = 30.0     # the reference's default
SEED = 20261207


def head(z, targets):
    logits = LOGIT_SOFTCAP * torch.tanh(z / LOGIT_SOFTCAP)
    return F.cross_entropy(logits.float(), targets, reduction="mean"), logits


def main(path, device, compiled):
    gen = torch.Generator().manual_seed(SEED)
    z = torch.randn(N, V, generator=gen) * 8.0
    z[::4] *= 4.0
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[::5] = z[::5].argmax(dim=1)
    z = z.to(device=device, dtype=torch.bfloat16).requires_grad_(True)
    targets = targets.to(device)

    loss_mean, logits = (torch.compile(head, fullgraph=True) if compiled else head)(z, targets)
    loss_mean.backward()
    with torch.no_grad():
        loss_rows = F.cross_entropy(logits.float(), targets, reduction="none")

    out = {
        "z": z.detach(),
        "targets": targets.to(torch.int32),
        "capped": logits.detach(),
        "loss": loss_rows,
        "loss_mean": loss_mean.detach().reshape(()),
        "dz": z.grad,
    }
    out = {k: v.cpu() for k, v in out.items()}
    assert out["capped"].dtype == torch.bfloat16 and out["dz"].dtype == torch.bfloat16
    meta = {"rows": str(N), "vocab": str(V), "logit_softcap": str(LOGIT_SOFTCAP), "seed": str(SEED),
            "torch": torch.__version__, "device": device, "compiled": str(int(compiled))}
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", nargs="?", default="softcap_autocast.safetensors")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    main(a.path, a.device, a.compile)
