#!/usr/bin/env python3
"""Loads weights written by a pgolf train binary (final_model.safetensors, reference state_dict
names) into the PyTorch re-statement of the reference model (test/cpu/data/make_golden_fixtures.py)
and prints the validation loss, to compare with `<name>_eval --weights <file>`.

Usage: check_interop.py WEIGHTS VAL_SHARD --vocab 1024 --layers 4 --dim 128 --heads 4 --kv-heads 2
       --mlp-mult 2 --seq 256
Needs torch, numpy and safetensors (not needed by the C++ build or CI).
"""
import argparse
import os
import sys

import numpy as np
import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cpu", "data"))
import make_golden_fixtures as ref  # noqa: E402

SHARD_HEADER_BYTES = 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weights")
    ap.add_argument("val_shard")
    for name, default in [("vocab", 1024), ("layers", 9), ("dim", 512), ("heads", 8), ("kv-heads", 4),
                          ("mlp-mult", 2), ("seq", 1024)]:
        ap.add_argument("--" + name, type=int, default=default)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--softcap", type=float, default=30.0)
    a = ap.parse_args()
    cfg = dict(vocab=a.vocab, layers=a.layers, dim=a.dim, heads=a.heads, kv_heads=a.kv_heads, mlp_mult=a.mlp_mult,
               seq=a.seq, rope_base=a.rope_base, softcap=a.softcap)
    params = {k: v.float() for k, v in load_file(a.weights).items()}
    raw = np.fromfile(a.val_shard, dtype="<u2", offset=SHARD_HEADER_BYTES)
    n = (len(raw) - 1) // a.seq * a.seq
    tokens = torch.from_numpy(raw[: n + 1].astype(np.int64))
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, n // a.seq, 64):
            e = min(n // a.seq, s + 64)
            x = tokens[s * a.seq: e * a.seq].view(-1, a.seq)
            y = tokens[s * a.seq + 1: e * a.seq + 1].view(-1, a.seq)
            loss, _ = ref.forward(params, x, y, cfg)
            total += loss.item() * x.numel()
            count += x.numel()
    print(f"pytorch val_loss:{total / count:.8f} tokens:{count}")


if __name__ == "__main__":
    main()
