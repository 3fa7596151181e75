"""Measure a large sweep's driver: `archsweep sweep` of N small trials (default 200) in its own process on a local
Ray, W&B offline on (one run per trial), its resident memory sampled every second against the trials finished,
then `archsweep report` over the result.

    python -m bench.load [--trials 200] [--no-wandb] [--write]

The sweep is sweeps/load.yaml (also the load test's): each trial a regularized-evolution search (20 queries, its
own seed) on one shared VAE stage, so the figures are the sweep machinery's, not training's.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._report import header, write_block

LOAD = Path(__file__).resolve().parents[1] / "sweeps" / "load.yaml"


def main() -> None:
    import psutil

    from archsweep.tracking.store import ResultStore

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--no-wandb", action="store_true")
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()
    archsweep = Path(sys.executable).with_name("archsweep")

    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "load.yaml"  # sweeps/load.yaml, cut to --trials seeds
        text = LOAD.read_text()
        seeds = re.search(r"grid: \[[^\]]*\]", text).group(0)
        spec.write_text(text.replace(seeds, f"grid: {list(range(args.trials))}"))
        storage = Path(tmp) / "sweeps"
        sweep_dir = storage / "load"
        start = time.perf_counter()
        driver = subprocess.Popen([str(archsweep), "sweep", str(spec), f"storage={storage}",
                                   f"tracking.wandb={str(not args.no_wandb).lower()}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        proc, samples = psutil.Process(driver.pid), []
        while driver.poll() is None:
            try:
                rss = proc.memory_info().rss
                done = sum(r.status == "TERMINATED" for r in ResultStore(sweep_dir).rows()) \
                    if (sweep_dir / "results.db").is_file() else 0
                samples.append((time.perf_counter() - start, done, rss))
            except (psutil.Error, OSError, ValueError):  # the store being created, or the driver ending
                pass
            time.sleep(1.0)
        elapsed = time.perf_counter() - start
        if driver.returncode:
            sys.exit(f"the sweep failed:\n{driver.stderr.read()[-3000:]}")
        rows = ResultStore(sweep_dir).rows()
        finished = sum(r.status == "TERMINATED" for r in rows)
        report_start = time.perf_counter()
        subprocess.run([str(archsweep), "report", str(sweep_dir), "--sort", "search/best_test"], check=True,
                       stdout=subprocess.DEVNULL)
        report_s = time.perf_counter() - report_start
        plots = sorted(p.name for p in (sweep_dir / "report").iterdir())

    def rss_at(k: int) -> str:
        seen = [rss for _, done, rss in samples if done <= k]
        return f"{max(seen) / 2**20:.0f}" if seen else "n/a"

    marks = [m for m in (1, args.trials // 4, args.trials // 2, 3 * args.trials // 4, args.trials) if m]
    peak = max(rss for _, _, rss in samples)
    lines = [f"### Sweep load ({args.trials} small trials, local Ray)", "", header(),
             f"{finished} of {args.trials} trials finished in {elapsed:.0f} s ({finished / elapsed:.2f} trials/s), "
             f"W&B {'off' if args.no_wandb else 'offline, one run per trial'}; `archsweep report` over them "
             f"{report_s:.1f} s ({', '.join(plots)}).",
             "",
             "| trials finished | " + " | ".join(str(m) for m in marks) + " | peak |",
             "|---|" + "---|" * (len(marks) + 1),
             "| driver RSS (MiB) | " + " | ".join(rss_at(m) for m in marks) + f" | {peak / 2**20:.0f} |"]
    body = "\n".join(lines)
    print(body)
    if args.write:
        write_block("load", body)


if __name__ == "__main__":
    main()
