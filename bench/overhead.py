"""Measure what a sweep adds to a trial: the CPU quick trial (NAS-Bench-201, gpt2-tiny, 1 + 1 epochs, 1,000
samples) as a 1-trial sweep (Ray Tune, result store, W&B offline) against the same pipeline called directly in
this process, side by side in one run, repeated, and where the difference goes.

    python -m bench.overhead [--repeats 2] [--wandb/--no-wandb] [--write]

A trial's fixed cost is split on the same run: the trial function's run time (Tune's `time_total_s`) less the
pipeline timed inside it (`pipeline_wall_s`: its process, imports, the result store, reports to Tune), and the
sweep's wall time less the trial function (Tune: start-up, the trial's actor, callbacks such as W&B, shutdown).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from archsweep.runtime import init_local_ray, worker_env
from bench._report import ROOT, header, write_block

QUICK = ["name=overhead", "train.epochs=1", "lm.epochs=1", "sample.samples=1000", "lm.name=gpt2-tiny"]


def measure(path: Path, overrides: list[str]) -> tuple:
    """(the 1-trial sweep, its timings): the sweep file's base trial with `overrides` called directly, then as a
    sweep; also what bench/reproduce.py reports as the sweep overhead."""
    from archsweep.stages import pipeline
    from archsweep.sweep.run import run_sweep
    from archsweep.sweep.spec import load_sweep

    with tempfile.TemporaryDirectory() as tmp:
        sweep = load_sweep(path, [f"storage={tmp}", *overrides])
        sweep = dataclasses.replace(sweep, axes={}, extra_trials=[])
        start = time.perf_counter()
        pipeline.run(sweep.base, Path(tmp) / "direct", env=worker_env())
        direct = time.perf_counter() - start
        start = time.perf_counter()
        grid = run_sweep(sweep)
        swept = time.perf_counter() - start
        if grid.errors:
            raise grid.errors[0]
        metrics = grid[0].metrics
    return sweep, {"direct": direct, "sweep": swept, "trial": float(metrics["time_total_s"]),
                   "pipeline": float(metrics["pipeline_wall_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()
    init_local_ray()

    runs = []
    for repeat in range(args.repeats):
        runs.append(measure(ROOT / "sweeps" / "generation-nasbench201-cpu.yaml",
                            [*QUICK, f"tracking.wandb={str(args.wandb).lower()}"])[1])
        r = runs[-1]
        print(f"run {repeat + 1}: direct {r['direct']:.1f} s; sweep {r['sweep']:.1f} s, of which the trial function "
              f"{r['trial']:.1f} s and its pipeline {r['pipeline']:.1f} s", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    rows = "\n".join(
        f"| {i + 1} | {r['direct']:.1f} s | {r['sweep']:.1f} s | {r['pipeline']:.1f} s | "
        f"{r['trial'] - r['pipeline']:.1f} s | {r['sweep'] - r['trial']:.1f} s | {r['sweep'] - r['pipeline']:.1f} s "
        f"({100 * (r['sweep'] - r['pipeline']) / r['pipeline']:.1f} %) | {r['sweep'] - r['direct']:+.1f} s |"
        for i, r in enumerate(runs))
    fixed = med["sweep"] - med["pipeline"]
    body = (
        "### Per-trial overhead of a sweep\n\n" + header() + "\n"
        f"The CPU quick trial ({', '.join(QUICK[1:])}, NAS-Bench-201) called directly, then as a 1-trial sweep "
        f"(W&B {'offline' if args.wandb else 'off'}), in one process on a local Ray; {args.repeats} runs. The "
        "trial's pipeline is timed inside the trial (`pipeline_wall_s`), so the fixed cost is measured on the same "
        "run: in the trial, its function's run time (Tune's time_total_s) less its pipeline (the trial's process "
        "and imports, the result store, reports to Tune); Tune's part, the sweep's wall time less the trial "
        "function (start-up, the trial's actor, callbacks such as W&B, shutdown). The last column compares with "
        "the pipeline called directly, a separate run (on this shared 2-core machine, runs of the same "
        "pipeline differ by several seconds).\n\n"
        "| run | pipeline called directly | as a sweep | its pipeline | in the trial | Tune | fixed cost "
        "(of the pipeline) | sweep - direct |\n|---|---|---|---|---|---|---|---|\n" + rows + "\n\n"
        f"Median: a trial's fixed cost is {fixed:.1f} s ({med['trial'] - med['pipeline']:.1f} s in the trial, "
        f"{med['sweep'] - med['trial']:.1f} s in Tune), {100 * fixed / med['pipeline']:.1f} % of a "
        f"{med['pipeline']:.1f} s quick trial.\n"
    )
    print(body)
    if args.write:
        write_block("overhead", body)


if __name__ == "__main__":
    main()
