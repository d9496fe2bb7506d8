#!/usr/bin/env python3
"""PyTorch's causal grouped-query SDPA at the shapes of bench/cuda/attention_bench.cu.

Times torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True) in
bf16 (what the reference train_gpt.py calls, with only the flash backend enabled: run with
`--backend flash` to time what the reference runs; the default lets PyTorch choose) for
the forward, the backward and forward + backward, with CUDA events: `--warmup` untimed runs, then
the median of `--iters` timed runs. FLOPs are counted as in attention_bench.cu (useful causal FLOPs):

    forward  = 4 * B * H * Hd * T * (T + 1) / 2     (Q K^T and P V over the causal pairs)
    backward = 2.5 * forward                         (five GEMMs: S, dP, dV, dK, dQ)
    forward + backward = 3.5 * forward

Each line reads like a Google Benchmark row (name, milliseconds, TFLOP/s), e.g.

    AttentionForward/pytorch_sdpa/H:8/Hkv:4/Hd:64/B:64/T:1024     <time> ms   <rate> TFLOP/s

to set next to `bench_cuda_attention --benchmark_counters_tabular=true`. A standalone script: nothing
imports it.
"""

import argparse
import statistics
import sys


def forward_flops(b, h, t, hd):
    return 4.0 * b * h * hd * t * (t + 1) / 2.0


def parse_shape(text):
    try:
        b, t = (int(x) for x in text.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be BxT (e.g. 64x1024), got {text!r}")
    return b, t


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", type=parse_shape, nargs="+", default=[(64, 1024), (32, 2048)],
                   help="batch x sequence length pairs, e.g. 64x1024 32x2048 (default: the baseline's and the seeds')")
    p.add_argument("--heads", type=int, default=8, help="query heads H (default 8)")
    p.add_argument("--kv-heads", type=int, default=4, help="KV heads Hkv (default 4)")
    p.add_argument("--head-dim", type=int, default=64, help="head dim Hd (default 64)")
    p.add_argument("--warmup", type=int, default=5, help="untimed runs before timing (default 5)")
    p.add_argument("--iters", type=int, default=30, help="timed runs; the median is reported (default 30)")
    p.add_argument("--backend", choices=["default", "flash", "efficient", "cudnn", "math"], default="default",
                   help="restrict SDPA to one backend (default: PyTorch's choice)")
    p.add_argument("--expand-kv", action="store_true",
                   help="repeat KV heads to H heads before SDPA instead of enable_gqa=True (for backends without GQA)")
    args = p.parse_args()

    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        print("no CUDA device: nothing to time", file=sys.stderr)
        return 1
    if args.heads % args.kv_heads:
        p.error("--heads must be a multiple of --kv-heads")

    backend_ctx = None
    if args.backend != "default":
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backend_ctx = {
            "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION,
            "math": SDPBackend.MATH,
        }[args.backend]

    H, Hkv, Hd = args.heads, args.kv_heads, args.head_dim
    dev = torch.device("cuda")
    print(f"# {torch.cuda.get_device_name(dev)}, torch {torch.__version__}, backend {args.backend}, "
          f"{'expanded KV' if args.expand_kv else 'enable_gqa=True'}, median of {args.iters}")

    def sdpa(q, k, v):
        if args.expand_kv:
            k = k.repeat_interleave(H // Hkv, dim=1)
            v = v.repeat_interleave(H // Hkv, dim=1)
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(args.iters):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))  # ms
        return statistics.median(times)

    def run_shape(B, T):
        gen = torch.Generator(device=dev).manual_seed(1234)
        # SDPA's layout (B, heads, T, Hd); the model's (B, T, heads, Hd) would be a transpose view.
        q = torch.randn(B, H, T, Hd, device=dev, dtype=torch.bfloat16, generator=gen, requires_grad=True)
        k = torch.randn(B, Hkv, T, Hd, device=dev, dtype=torch.bfloat16, generator=gen, requires_grad=True)
        v = torch.randn(B, Hkv, T, Hd, device=dev, dtype=torch.bfloat16, generator=gen, requires_grad=True)
        dy = torch.randn(B, H, T, Hd, device=dev, dtype=torch.bfloat16, generator=gen)

        def fwd():
            with torch.no_grad():
                sdpa(q, k, v)

        y_saved = sdpa(q, k, v)

        def bwd():
            torch.autograd.grad(y_saved, (q, k, v), dy, retain_graph=True)

        def fwd_bwd():
            y = sdpa(q, k, v)
            torch.autograd.grad(y, (q, k, v), dy)

        f = forward_flops(B, H, T, Hd)
        suffix = f"H:{H}/Hkv:{Hkv}/Hd:{Hd}/B:{B}/T:{T}"
        for name, fn, flops in (("AttentionForward", fwd, f), ("AttentionBackward", bwd, 2.5 * f),
                                ("AttentionForwardBackward", fwd_bwd, 3.5 * f)):
            ms = timed(fn)
            print(f"{name + '/pytorch_sdpa/' + suffix:<72} {ms:9.3f} ms {flops / (ms * 1e-3) * 1e-12:9.1f} TFLOP/s")

    for B, T in args.shapes:
        if backend_ctx is not None:
            with sdpa_kernel(backend_ctx):
                run_shape(B, T)
        else:
            run_shape(B, T)
    return 0


if __name__ == "__main__":
    sys.exit(main())
