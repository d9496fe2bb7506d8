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
"""

import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

N, V = 32, 1024          # rows, vocabulary (the baseline's)
LOGIT_SOFTCAP = 30.0     # the reference's default
SEED = 20261207


def main(path):
    gen = torch.Generator().manual_seed(SEED)
    z = torch.randn(N, V, generator=gen) * 8.0
    z[::4] *= 4.0
    targets = torch.randint(0, V, (N,), generator=gen)
    targets[::5] = z[::5].argmax(dim=1)
    z = z.to(torch.bfloat16).requires_grad_(True)

    logits = LOGIT_SOFTCAP * torch.tanh(z / LOGIT_SOFTCAP)
    loss_mean = F.cross_entropy(logits.float(), targets, reduction="mean")
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
    assert out["capped"].dtype == torch.bfloat16 and out["dz"].dtype == torch.bfloat16
    meta = {"rows": str(N), "vocab": str(V), "logit_softcap": str(LOGIT_SOFTCAP), "seed": str(SEED),
            "torch": torch.__version__, "device": "cpu"}
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata=meta)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "softcap_autocast.safetensors")
