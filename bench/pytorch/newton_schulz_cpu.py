#!/usr/bin/env python3
"""The Newton-Schulz iteration of the reference's Muon (zeropower_via_newtonschulz5: five steps of
the quintic (3.4445, -4.7750, 2.0315) on X = G / (||G|| + 1e-7), transposed when rows > cols),
timed in PyTorch on the CPU in bf16 (as train_gpt.py runs it) and in float32, over one optimizer
step's matrices of a configuration: the block matrices c_q, c_k, c_v, proj, fc, mlp.proj of every
layer.

It tells how much of the reference's step time on a CPU goes to bf16 matrix products, which many
CPUs run without hardware support (docs/benchmarks.md, the CPU side-by-side). Prints one line per
precision: milliseconds per optimizer step (median of --repeats), and the matrix count.

Usage: newton_schulz_cpu.py [--layers 4 --dim 128 --heads 4 --kv-heads 2 --mlp-mult 2] [--threads 2]
Needs torch. A standalone script: nothing imports it.
"""

import argparse
import os
import statistics
import sys
import time

import torch

# The PyTorch re-statement of the reference's zeropower_via_newtonschulz5 that test_golden's
# fixtures come from.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "test", "cpu", "data"))
from make_golden_fixtures import newton_schulz5  # noqa: E402

NS_STEPS = 5  # MUON_BACKEND_STEPS


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--mlp-mult", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    d, kv = args.dim, args.dim // args.heads * args.kv_heads
    hidden = args.mlp_mult * d
    shapes = [(d, d), (kv, d), (kv, d), (d, d), (hidden, d), (d, hidden)] * args.layers
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(*s, generator=gen) for s in shapes]
    for dtype in (torch.bfloat16, torch.float32):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for g in grads:
                newton_schulz5(g, NS_STEPS, dtype)
            times.append(time.perf_counter() - start)
        print(f"newton_schulz {str(dtype).removeprefix('torch.')}: {1000 * statistics.median(times):.1f} ms per optimizer step "
              f"({len(shapes)} matrices, {args.threads} threads, torch {torch.__version__})")


if __name__ == "__main__":
    main()
