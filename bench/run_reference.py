#!/usr/bin/env python3
"""Runs the reference train_gpt.py (openai/parameter-golf, fetched separately, never committed
here) with two optional edits, for side-by-side runs with pgolf (bench/compare_reference.py):

  INIT_WEIGHTS=<file.safetensors>  the model starts from these weights (reference state_dict
      names, as pgolf's train binaries write final_model.safetensors) instead of its own random
      init, so that both programs start from the same point (a record that banks its block
      matrices, PR #1089, rebuilds its banks with its own _rebank_state_dict; one that names the
      hash embedding otherwise, PR #436's bigram_hash.emb/proj/scale, gets pgolf's tensors under
      its names);
  --cpu  the script runs on the CPU in float32, where pgolf's CPU backend computes: no CUDA
      (device cpu; no CUDA check, seed, synchronisation, memory statistics or nvidia-smi), no
      .bfloat16() on the model, autocast disabled, float32 attention inputs where a record script
      casts them to bf16 for FlashAttention (Newton-Schulz stays bf16: the script writes it
      explicitly), no torch.compile (the eager model computes the same function). For checking
      pgolf's semantics against the real script without a GPU (docs/reference-parity.md).

The script is read, edited in memory and executed as __main__; its __file__ stays the original,
so its code-size accounting is unchanged. Every edit must match the script exactly as often as
expected, or this runner stops and names it.

Usage: run_reference.py [--cpu] path/to/train_gpt.py   (the script's environment variables)
Needs what the script needs (torch, numpy, sentencepiece).
"""
import contextlib
import json
import linecache
import math
import os
import re
import sys

import torch

# (what, old, new, expected count or tuple of allowed counts)
# After the model's dtypes are set, at that line's own indentation.
INIT_EDIT = ("initial weights", re.compile(r"^([ \t]*)restore_low_dim_params_to_fp32\(base_model\)\n", re.MULTILINE),
             r"\g<0>\1_pgolf_load_initial_weights(base_model, log0, globals())\n", 1)
CPU_EDITS = [
    ("CUDA check", 'if not torch.cuda.is_available():\n        raise RuntimeError("CUDA is required")\n', "pass\n", 1),
    ("device", 'device = torch.device("cuda", local_rank)\n    torch.cuda.set_device(device)\n', 'device = torch.device("cpu")\n', 1),
    ("CUDA seed", "torch.cuda.manual_seed_all(args.seed)", "pass", 1),
    ("nvidia-smi in the log", '["nvidia-smi"]', '["true"]', 1),
    # The training model, and in some record scripts more built for evaluation or calibration.
    ("bf16 model", ").to(device).bfloat16()", ").to(device)", (1, 2, 3)),
    # Record scripts that cast q, k, v to bf16 for FlashAttention-3 (and for their SDPA fallback).
    ("bf16 attention inputs", "fa_dtype = torch.bfloat16", "fa_dtype = torch.float32", (0, 1)),
]


SAFETENSORS_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _read_safetensors(path):
    """The tensors of a safetensors file (8-byte little-endian header size, JSON header, data),
    read here so that the runner needs no safetensors package on a GPU machine."""
    with open(path, "rb") as f:
        blob = f.read()
    header_size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + header_size])
    data = memoryview(blob)[8 + header_size:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            sys.exit(f"INIT_WEIGHTS={path}: {name} has dtype {info['dtype']}, expected one of {sorted(SAFETENSORS_DTYPES)}")
        dtype = SAFETENSORS_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        numel = math.prod(info["shape"])
        if end - begin != numel * dtype.itemsize or end > len(data):
            sys.exit(f"INIT_WEIGHTS={path}: {name} ({info['dtype']} {info['shape']}) has bytes [{begin}, {end}) "
                     f"of {len(data)}; expected {numel * dtype.itemsize}: the file is truncated or corrupt")
        if numel == 0:
            tensors[name] = torch.empty(info["shape"], dtype=dtype)
        else:
            tensors[name] = torch.frombuffer(bytearray(data[begin:end]), dtype=dtype).reshape(info["shape"])
    return tensors


# pgolf's names (the canonical BigramHash of rec/2026-03-20) -> a record's own names for the same tensors.
RECORD_NAME_ALIASES = {
    "bigram.embed.weight": "bigram_hash.emb.weight",  # PR #436 (seed A) BigramHash
    "bigram.proj.weight": "bigram_hash.proj.weight",
    "bigram.scale": "bigram_hash.scale",
}


def _pgolf_load_initial_weights(model, log0, script_globals):
    path = os.environ.get("INIT_WEIGHTS")
    if not path:
        return
    state = _read_safetensors(path)
    own = model.state_dict()
    if "qo_bank" in own and "_rebank_state_dict" in script_globals:
        # Records that bank the block matrices (PR #1089): pgolf writes them one per layer, under the
        # names the record's own _unbank_state_dict gives them.
        state = script_globals["_rebank_state_dict"](state, len(model.blocks), own)
    state = {RECORD_NAME_ALIASES[k] if k not in own and RECORD_NAME_ALIASES.get(k) in own else k: v
             for k, v in state.items()}
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        sys.exit(f"INIT_WEIGHTS={path}: tensors missing {missing[:5]}, unexpected {extra[:5]}")
    for name, t in own.items():
        if tuple(state[name].shape) != tuple(t.shape):
            sys.exit(f"INIT_WEIGHTS={path}: {name} has shape {tuple(state[name].shape)}, the model {tuple(t.shape)}")
    model.load_state_dict({k: v.to(device=own[k].device, dtype=own[k].dtype) for k, v in state.items()}, strict=True)
    log0(f"init_weights:{path} tensors:{len(state)}")


def main():
    args = sys.argv[1:]
    cpu = "--cpu" in args
    args = [a for a in args if a != "--cpu"]
    if len(args) != 1 or args[0].startswith("-"):
        sys.exit(__doc__)
    path = os.path.abspath(args[0])
    with open(path, encoding="utf-8") as f:
        source = f.read()
    for what, old, new, count in [INIT_EDIT] + (CPU_EDITS if cpu else []):
        found = len(old.findall(source)) if isinstance(old, re.Pattern) else source.count(old)
        if found not in (count if isinstance(count, tuple) else (count,)):
            pattern = old.pattern if isinstance(old, re.Pattern) else old
            sys.exit(f"{path}: the '{what}' edit expects {count} occurrence(s) of {pattern!r}, found {found}; "
                     "this runner was written for openai/parameter-golf's root train_gpt.py and the record scripts that "
                     "keep its structure")
        source = old.sub(new, source) if isinstance(old, re.Pattern) else source.replace(old, new)
    if cpu:
        torch.autocast = lambda *args, **kwargs: contextlib.nullcontext()  # every form of the call, float32 inside
        torch.compile = lambda model, **kwargs: model
        torch.cuda.synchronize = lambda *args, **kwargs: None
        torch.cuda.max_memory_allocated = lambda *args, **kwargs: 0
        torch.cuda.max_memory_reserved = lambda *args, **kwargs: 0
    sys.argv = [path]
    # Tracebacks then show the edited lines, whose numbers no longer match the file.
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    namespace = {"__name__": "__main__", "__file__": path, "_pgolf_load_initial_weights": _pgolf_load_initial_weights}
    exec(compile(source, path, "exec"), namespace)


if __name__ == "__main__":
    main()
