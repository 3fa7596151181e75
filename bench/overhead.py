"""Measure what a sweep adds to a trial: the CPU quick trial (NAS-Bench-201, gpt2-tiny, 1 + 1 epochs, 1,000
samples) as a 1-trial sweep (Ray Tune, result store, W&B offline) against the same pipeline called directly in
this process, side by side in one run, repeated, and where the difference goes.

    python bench/overhead.py [--repeats 2] [--wandb/--no-wandb] [--write]

Split of the sweep's wall time: the trial function's own run time (Tune's `time_total_s`: the pipeline plus what
the trial does around it: its imports, the result store, forwarding each epoch to Tune) and the rest, Tune's
fixed cost (start-up, starting the trial's actor, callbacks such as W&B, shutdown).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, header, write_block

from archsweep.runtime import init_local_ray, worker_env

QUICK = ["name=overhead", "train.epochs=1", "lm.epochs=1", "sample.samples=1000", "lm.name=gpt2-tiny"]


def measure(wandb: bool) -> dict:
    from archsweep.stages import pipeline
    from archsweep.sweep.run import run_sweep
    from archsweep.sweep.spec import load_sweep

    with tempfile.TemporaryDirectory() as tmp:
        sweep = load_sweep(ROOT / "sweeps" / "generation-nasbench201-cpu.yaml",
                           [f"storage={tmp}", *QUICK, f"tracking.wandb={str(wandb).lower()}"])
        sweep = dataclasses.replace(sweep, axes={}, extra_trials=[])
        start = time.perf_counter()
        pipeline.run(sweep.base, Path(tmp) / "direct", env=worker_env())
        direct = time.perf_counter() - start
        start = time.perf_counter()
        grid = run_sweep(sweep)
        swept = time.perf_counter() - start
        if grid.errors:
            raise grid.errors[0]
        trial = float(grid[0].metrics["time_total_s"])
    return {"direct": direct, "sweep": swept, "trial": trial}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()
    init_local_ray()

    runs = []
    for repeat in range(args.repeats):
        runs.append(measure(args.wandb))
        r = runs[-1]
        print(f"run {repeat + 1}: direct {r['direct']:.1f} s, sweep {r['sweep']:.1f} s (trial function "
              f"{r['trial']:.1f} s): +{r['sweep'] - r['direct']:.1f} s, "
              f"{100 * (r['sweep'] - r['direct']) / r['direct']:.1f} %", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    rows = "\n".join(
        f"| {i + 1} | {r['direct']:.1f} s | {r['sweep']:.1f} s | {r['trial']:.1f} s | {r['trial'] - r['direct']:+.1f} s | "
        f"{r['sweep'] - r['trial']:.1f} s | {r['sweep'] - r['direct']:+.1f} s ({100 * (r['sweep'] - r['direct']) / r['direct']:.1f} %) |"
        for i, r in enumerate(runs))
    body = (
        "### Per-trial overhead of a sweep\n\n" + header() + "\n"
        f"The CPU quick trial ({', '.join(QUICK[1:])}, NAS-Bench-201) called directly, then as a 1-trial sweep "
        f"(W&B {'offline' if args.wandb else 'off'}), in one process on a local Ray; {args.repeats} runs. Trial "
        "function: Tune's time_total_s of the trial; Tune's fixed cost: the sweep's wall time less that.\n\n"
        "| run | pipeline called directly | as a sweep | trial function | in the trial, beyond the pipeline | "
        "Tune's fixed cost | overhead |\n|---|---|---|---|---|---|---|\n" + rows + "\n\n"
        f"Median overhead: {med['sweep'] - med['direct']:+.1f} s on a {med['direct']:.1f} s trial "
        f"({100 * (med['sweep'] - med['direct']) / med['direct']:.1f} %).\n"
    )
    print(body)
    if args.write:
        write_block("overhead", body)


if __name__ == "__main__":
    main()
