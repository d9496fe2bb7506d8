#!/usr/bin/env python3
"""Side-by-side training run: the reference train_gpt.py (openai/parameter-golf, fetched separately and
never committed here) and pgolf's baseline_train, on the same GPU, the same shards, the same
configuration and the same number of steps, one after the other in one invocation (pgolf first;
each runs even if the other fails, and --json is rewritten after each).

Both programs read the same environment variables (DATA_PATH, TOKENIZER_PATH, ITERATIONS,
TRAIN_BATCH_TOKENS, TRAIN_SEQ_LEN, WARMUP_STEPS, VAL_LOSS_EVERY, ...) and print the same log lines
(`step:N/M val_loss:... val_bpb:... train_time:...ms step_avg:...ms`), so the comparison reads the
final validation line of each: step_avg gives the training throughput (tokens per step / step time,
compile warm-up and validation excluded by both programs), val_bpb the quality at equal steps.

With --same-init, pgolf first writes its initial weights (ITERATIONS=0) and the reference starts
from them (bench/run_reference.py, INIT_WEIGHTS): the two runs then differ only by the programs,
not by their random initialisations, and the train losses are compared step by step. With
--reference-cpu, the reference runs on the CPU in float32 (run_reference.py --cpu) next to pgolf's
CPU backend: a check of the semantics without a GPU (its throughputs compare two CPU programs).
For a configuration other than the baseline, export its model variables (NUM_LAYERS, MODEL_DIM,
...) and give --pgolf that configuration's train binary (it checks that they agree).

Prints one summary line per program and the ratios, and writes them as JSON with --json.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

VAL_RE = re.compile(r"^step:(\d+)/(\d+) val_loss:([0-9.]+) val_bpb:([0-9.]+) train_time:(\d+)ms step_avg:([0-9.]+)ms")
TRAIN_RE = re.compile(r"^step:(\d+)/(\d+) train_loss:([0-9.]+) train_time:(\d+)ms step_avg:([0-9.]+)ms")
# The round trip through the compressed int8 artifact: the reference's zlib, pgolf's zstd.
ROUNDTRIP_RE = re.compile(r"^final_int8_(?:zlib|zstd)_roundtrip val_loss:([0-9.]+) val_bpb:([0-9.]+)")


def run(name, cmd, env, cwd, log_path):
    """Runs one program, its output into log_path; the parsed figures, or None when it failed."""
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if VAL_RE.match(line) or line.startswith(("step:1/", "final_", "error", "Traceback")):
                print(f"  [{name}] {line.rstrip()}", flush=True)
        rc = proc.wait()
    if rc != 0:
        print(f"{name} failed with exit code {rc}; its output is in {log_path}", file=sys.stderr, flush=True)
        return None
    return parse(name, log_path, time.time() - start)


def parse(name, log_path, wall_s):
    vals, trains, roundtrip = [], [], None
    with open(log_path) as f:
        for line in f:
            if m := VAL_RE.match(line):
                vals.append(m)
            elif m := TRAIN_RE.match(line):
                trains.append(m)
            elif m := ROUNDTRIP_RE.match(line):
                roundtrip = {"val_loss": float(m.group(1)), "val_bpb": float(m.group(2))}
    if not vals:
        print(f"{name}: no validation line in {log_path}", file=sys.stderr, flush=True)
        return None
    last = vals[-1]
    return {
        "step": int(last.group(1)),
        "val_loss": float(last.group(3)),
        "val_bpb": float(last.group(4)),
        "train_time_ms": float(last.group(5)),
        "step_avg_ms": float(last.group(6)),
        "train_losses": {int(m.group(1)): float(m.group(3)) for m in trains},
        "int8_roundtrip": roundtrip,
        "wall_s": wall_s,
        "log": log_path,
    }


def preflight(pgolf):
    """pgolf's binary must start (its shared libraries found) before minutes go to the reference."""
    try:
        proc = subprocess.run([pgolf, "--help"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
    except OSError as e:
        sys.exit(f"cannot run {pgolf}: {e}")
    if proc.returncode != 0:
        sys.exit(f"{pgolf} --help failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", required=True, help="path of the reference train_gpt.py")
    p.add_argument("--pgolf", required=True, help="path of pgolf's baseline_train binary")
    p.add_argument("--data-path", required=True, help="shards in the reference format (fineweb_{train,val}_*.bin)")
    p.add_argument("--tokenizer-path", required=True, help="the SentencePiece .model of those shards")
    p.add_argument("--iterations", type=int, default=200, help="training steps of each program (step_avg does not depend on it)")
    p.add_argument("--train-batch-tokens", type=int, default=524288)
    p.add_argument("--train-seq-len", type=int, default=1024)
    p.add_argument("--warmup-steps", type=int, default=20, help="untimed priming steps (torch.compile happens here)")
    p.add_argument("--python", default=sys.executable, help="interpreter for the reference")
    p.add_argument("--pgolf-device", default=None, help="pgolf's DEVICE (default: cuda, or cpu with --reference-cpu)")
    p.add_argument("--same-init", action="store_true", help="start the reference from pgolf's initial weights")
    p.add_argument("--reference-cpu", action="store_true", help="run the reference on the CPU in float32 (and pgolf on its CPU backend)")
    p.add_argument("--train-log-every", type=int, default=50, help="TRAIN_LOG_EVERY of both programs")
    p.add_argument("--workdir", default=None, help="where both programs write their logs and weights (default: a temp dir)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args()

    workdir = args.workdir or tempfile.mkdtemp(prefix="pgolf-vs-reference-")
    os.makedirs(workdir, exist_ok=True)
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "INIT_WEIGHTS"):  # one process, one GPU; --same-init sets INIT_WEIGHTS
        env.pop(k, None)
    env.update({
        "DATA_PATH": os.path.abspath(args.data_path),
        "TOKENIZER_PATH": os.path.abspath(args.tokenizer_path),
        "ITERATIONS": str(args.iterations),
        "TRAIN_BATCH_TOKENS": str(args.train_batch_tokens),
        "TRAIN_SEQ_LEN": str(args.train_seq_len),
        "WARMUP_STEPS": str(args.warmup_steps),
        "VAL_LOSS_EVERY": "0",  # validation at the end only (both programs)
        "TRAIN_LOG_EVERY": str(args.train_log_every),
        "MAX_WALLCLOCK_SECONDS": "0",
        "WARMDOWN_ITERS": str(max(1, args.iterations // 4)),
        "SEED": "1337",
        "RUN_ID": "side_by_side",
    })
    preflight(os.path.abspath(args.pgolf))
    tokens = args.train_batch_tokens
    result = {"iterations": args.iterations, "train_batch_tokens": tokens, "train_seq_len": args.train_seq_len}

    def save():
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=2)

    def record(name, figures):
        result[name] = dict(figures, tokens_per_s=tokens / (figures["step_avg_ms"] / 1000.0)) if figures else None
        save()  # after each program: a run stopped later still leaves what finished

    # pgolf first (the shorter run, and the one whose failure says the most), then the reference;
    # each runs even if the other failed.
    pgolf_device = args.pgolf_device or ("cpu" if args.reference_cpu else "cuda")
    env_pgolf = dict(env, OUT_DIR=os.path.join(workdir, "pgolf-runs"), DEVICE=pgolf_device)
    reference_cmd = [args.python, os.path.abspath(args.reference)]
    if args.same_init or args.reference_cpu:
        runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_reference.py")
        reference_cmd = [args.python, runner] + (["--cpu"] if args.reference_cpu else []) + [os.path.abspath(args.reference)]
    env_reference = dict(env)
    if args.same_init:
        init_env = dict(env_pgolf, ITERATIONS="0", WARMUP_STEPS="0", FINAL_ROUNDTRIP="0", RUN_ID="initial_weights")
        init_log = os.path.join(workdir, "pgolf-init.log")
        print(f"== pgolf initial weights -> {init_log}", flush=True)
        with open(init_log, "w") as log:
            rc = subprocess.run([os.path.abspath(args.pgolf)], env=init_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT).returncode
        weights = os.path.join(workdir, "pgolf-runs", "initial_weights", "final_model.safetensors")
        if rc != 0 or not os.path.exists(weights):
            sys.exit(f"pgolf could not write its initial weights (exit {rc}); see {init_log}")
        env_reference["INIT_WEIGHTS"] = weights
        result["same_init"] = weights
    result["reference_device"] = "cpu" if args.reference_cpu else "cuda"
    result["pgolf_device"] = pgolf_device
    record("pgolf", run("pgolf", [os.path.abspath(args.pgolf)], env_pgolf, workdir, os.path.join(workdir, "pgolf.log")))
    record("reference", run("reference", reference_cmd, env_reference, workdir, os.path.join(workdir, "reference.log")))

    for name in ("reference", "pgolf"):
        r = result[name]
        if r is None:
            print(f"{name:9s} failed (see its log in {workdir})")
            continue
        rt = r["int8_roundtrip"]
        print(f"{name:9s} step:{r['step']} val_loss:{r['val_loss']:.4f} val_bpb:{r['val_bpb']:.4f} "
              f"step_avg:{r['step_avg_ms']:.2f}ms tokens/s:{r['tokens_per_s']:.0f}"
              + (f" int8_roundtrip_val_bpb:{rt['val_bpb']:.4f}" if rt else ""))
    if result["reference"] and result["pgolf"]:
        result["throughput_ratio"] = result["pgolf"]["tokens_per_s"] / result["reference"]["tokens_per_s"]
        result["val_bpb_difference"] = result["pgolf"]["val_bpb"] - result["reference"]["val_bpb"]
        ref_losses, pgolf_losses = result["reference"]["train_losses"], result["pgolf"]["train_losses"]
        common = sorted(set(ref_losses) & set(pgolf_losses))
        result["train_loss_difference"] = {step: pgolf_losses[step] - ref_losses[step] for step in common}
        print(f"throughput_ratio (pgolf/reference): {result['throughput_ratio']:.3f}")
        print(f"val_bpb difference (pgolf - reference): {result['val_bpb_difference']:+.4f}")
        if common:
            worst = max(common, key=lambda step: abs(result["train_loss_difference"][step]))
            print(f"train_loss difference (pgolf - reference) at {len(common)} logged steps: "
                  f"step {common[0]} {result['train_loss_difference'][common[0]]:+.4f}, largest {result['train_loss_difference'][worst]:+.4f} "
                  f"at step {worst}, last {result['train_loss_difference'][common[-1]]:+.4f}")
        save()
    else:
        sys.exit(1)


if __name__ == "__main__":
    main()
