"""Where a trial's seconds go, from a trace rather than guesses: the CPU quick trial (as bench/overhead.py: NAS-Bench-201,
gpt2-tiny, 1 + 1 epochs, 1,000 samples) run as a 1-trial sweep with $ARCHSWEEP_TRACE set, so that the driver, the
trial and the Ray Train workers each mark their steps (archsweep/trace.py) on one clock.

    python -m bench.startup [--repeats 2] [--wandb/--no-wandb] [--write]

Each row is the time between two consecutive marks on the trial's path; a row is work (the stages' epochs, the
LM's sampling and scoring) or fixed cost (everything a trial pays whatever its size); the block reports each
segment's median over the repeats, and every run's wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from archsweep.runtime import init_local_ray
from archsweep.trace import TRACE_ENV, read
from bench._report import ROOT, header, write_block
from bench.overhead import QUICK  # the same trial that bench/overhead.py measures


def is_work(start: str, end: str) -> bool:
    """The stages' epochs (from a loop's `set up` to its last epoch's report) and the LM's sampling and scoring."""
    segment = f"{start} -> {end}"
    if segment == "lm stage: model saved -> lm stage: done":
        return True
    stage = start.split(":")[0]
    return stage in ("vqvae", "lm") and (start.endswith("set up") or " epoch " in start) and " epoch " in end


def segments(marks: list[dict]) -> list[tuple[str, str, float]]:
    """(from, to, seconds) between consecutive marks, from the sweep's start to its end."""
    return [(a["event"], b["event"], b["t"] - a["t"]) for a, b in zip(marks, marks[1:])]


def measure(overrides: list[str]) -> tuple[list[tuple[str, str, float]], float]:
    """The trace of one 1-trial sweep, and the sweep's wall time."""
    from archsweep.sweep.run import run_sweep
    from archsweep.sweep.spec import load_sweep

    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.jsonl"
        os.environ[TRACE_ENV] = str(trace)
        try:
            sweep = load_sweep(ROOT / "sweeps" / "generation-nasbench201-cpu.yaml", [f"storage={tmp}", *overrides])
            sweep = dataclasses.replace(sweep, axes={}, extra_trials=[])
            start = time.perf_counter()
            grid = run_sweep(sweep)
            wall = time.perf_counter() - start
        finally:
            del os.environ[TRACE_ENV]
        if grid.errors:
            raise grid.errors[0]
        return segments(read(trace)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--wandb", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()
    start = time.perf_counter()
    init_local_ray()
    ray_start = time.perf_counter() - start

    runs = []
    for repeat in range(args.repeats):
        runs.append(measure([*QUICK, f"tracking.wandb={str(args.wandb).lower()}"]))
        rows, wall = runs[-1]
        fixed = sum(s for a, b, s in rows if not is_work(a, b))
        print(f"run {repeat + 1}: sweep {wall:.1f} s, fixed cost {fixed:.1f} s", flush=True)

    first, _ = runs[0]
    keys = [(a, b) for a, b, _ in first]
    median = {key: statistics.median(dict(((a, b), s) for a, b, s in rows).get(key, 0.0) for rows, _ in runs)
              for key in keys}
    table = "\n".join(f"| {a} | {b} | {'work' if is_work(a, b) else 'fixed'} | {median[(a, b)]:.2f} s |"
                      for a, b in keys)
    fixed = sum(s for (a, b), s in median.items() if not is_work(a, b))
    work = sum(s for (a, b), s in median.items() if is_work(a, b))
    walls = [wall for _, wall in runs]
    body = (
        "### Where a trial's seconds go\n\n" + header() + "\n"
        f"The CPU quick trial ({', '.join(QUICK[1:])}, NAS-Bench-201) as a 1-trial sweep on a local Ray (W&B "
        f"{'offline' if args.wandb else 'off'}), traced by `$ARCHSWEEP_TRACE`; {args.repeats} runs, median per "
        f"segment. Ray's own start ({ray_start:.1f} s here) is paid once per sweep and is not in the table.\n\n"
        "| from | to | kind | seconds |\n|---|---|---|---|\n" + table + "\n\n"
        f"Fixed cost {fixed:.1f} s, work {work:.1f} s: {100 * fixed / (fixed + work):.0f} % of the trial's "
        f"{fixed + work:.1f} s is fixed (sweep wall times: {', '.join(f'{w:.1f} s' for w in walls)}).\n"
    )
    print(body)
    if args.write:
        write_block("startup", body)


if __name__ == "__main__":
    main()
