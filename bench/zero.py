"""Per-rank memory of the LM stage under DeepSpeed ZeRO 0, 1, 2 and 3: what each of 2 Ray Train workers holds of
the parameters and of the optimizer state, read from the tensors DeepSpeed partitioned (`memory_footprint` in
archsweep/train/lm.py), and each worker's peak resident memory. With --large, the ~1B LLaMA-shaped preset under
ZeRO-3 with CPU offload, a few steps.

    python -m bench.zero [--model gpt2-124m] [--workers 2] [--steps 3] [--large] [--write]

The LM trains on NAS-Bench-201 codes of a real VQ-VAE stage (one epoch, made once under --out), the rest of the
configuration as given below; every run is `archsweep.train.lm.fit`, the LM stage's own training.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from archsweep.config import load_config
from archsweep.layout import RunDir
from archsweep.runtime import init_local_ray, worker_env
from bench._report import header, write_block

BASE = ["space=nasbench201", "train.epochs=1", "train.num_workers=2", "lm.epochs=1", "lm.checkpoint_interval_s=0"]


def codes(out: Path) -> Path:
    from archsweep.stages import vqvae

    stage = RunDir(out).vqvae
    if not stage.finished():
        vqvae.run(load_config(overrides=BASE), stage.dir, worker_env())
    return stage.codes


def train(codes_path: Path, overrides: list[str]) -> dict:
    """Rank 0's last report, the wall time, or the error."""
    from archsweep.train import history
    from archsweep.train.lm import fit

    cfg = load_config(overrides=[*BASE, *overrides])
    with tempfile.TemporaryDirectory(dir=codes_path.parent.parent) as out:
        start = time.perf_counter()
        result = fit(cfg, codes_path, out, worker_env())
        wall = time.perf_counter() - start
        if result.error is not None:
            return {"error": str(result.error).strip().splitlines()[-1][:300], "wall_s": wall}
        return history(result).iloc[-1].to_dict() | {"wall_s": wall}


def gib(n: float) -> str:
    return f"{n / 2**30:.3f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2-124m")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="optimiser steps per run (lm.max_steps)")
    parser.add_argument("--batch", type=int, default=16, help="global batch (lm.batch_size)")
    parser.add_argument("--large", action="store_true", help="also llama-1b, ZeRO-3 with CPU offload")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-zero"))
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()
    init_local_ray(num_cpus=args.workers)
    codes_path = codes(args.out)

    common = [f"lm.name={args.model}", f"lm.num_workers={args.workers}", f"lm.max_steps={args.steps}",
              f"lm.batch_size={args.batch}"]
    rows, zero0 = [], None
    for stage in (0, 1, 2, 3):
        m = train(codes_path, [*common, f"lm.zero_stage={stage}"])
        if "error" in m:
            rows.append(f"| {stage} | failed: {m['error']} | | | | | |")
            print(rows[-1], flush=True)
            continue
        zero0 = zero0 or m
        rows.append(f"| {stage} | {gib(m['param_bytes'])} | {m['param_bytes'] / zero0['param_bytes']:.3f} | "
                    f"{gib(m['optimizer_bytes'])} | {m['optimizer_bytes'] / zero0['optimizer_bytes']:.3f} | "
                    f"{gib(m['peak_memory_bytes'])} | {m['tokens_per_s']:,.0f} |")
        print(rows[-1], flush=True)

    large = ""
    if args.large:
        overrides = ["lm.name=llama-1b", f"lm.num_workers={args.workers}", "lm.zero_stage=3", "lm.offload=cpu",
                     "lm.gradient_checkpointing=true", "lm.max_steps=2", f"lm.batch_size={args.workers}"]
        m = train(codes_path, overrides)
        outcome = f"failed: {m['error']}" if "error" in m else (
            f"trained {m['steps']:.0f} steps, loss {m['loss']:.3f}; per rank: parameters {gib(m['param_bytes'])}, "
            f"optimizer state {gib(m['optimizer_bytes'])}, peak resident memory {gib(m['peak_memory_bytes'])}")
        large = (f"\n`{' '.join(overrides)}` ({m['wall_s']:.0f} s wall, start-up and the checkpoint included): "
                 f"{outcome}\n")
        print(large, flush=True)

    body = (
        f"### ZeRO memory: {args.model} on {args.workers} CPU workers\n\n" + header() + "\n"
        f"`archsweep train lm` settings: `{' '.join(common)}`, NAS-Bench-201 codes (K = 64, L = 8), fp32 on CPU "
        "(gloo), torch AdamW. Per rank (rank 0, after its last step): parameters it holds, Adam's moments plus the "
        "fp32 master copy ZeRO 1-3 keep of their partition, and the worker process's peak resident memory "
        "(libraries, activations and gradients included). Ratios against ZeRO-0. tokens/s: over 3 steps of a run "
        "that starts up, not a speed figure.\n\n"
        "| ZeRO stage | parameters per rank | vs ZeRO-0 | optimizer state per rank | vs ZeRO-0 | peak resident "
        "memory per rank | tokens/s |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n" + large
    )
    print(body)
    if args.write:
        write_block(f"zero-{args.model}", body)


if __name__ == "__main__":
    main()
