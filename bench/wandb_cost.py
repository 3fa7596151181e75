"""Measure what W&B logging adds to a sweep: the demo's sweep (sweeps/quick.yaml, 8 trials) run as the README runs
it, once with `tracking.wandb=false` and once with W&B offline (trial runs, the VQ-VAE stages' runs and artifacts,
the LMs as artifacts, tables of generated cells, the sweep-summary run), one after the other on this machine.

    python -m bench.wandb_cost [--repeats 2] [--write]

Each run is `archsweep sweep sweeps/quick.yaml` in its own process with its own local Ray (what `make demo` runs
after its data check), timed from start to exit; both must exit 0 with every trial finished. The order alternates
between repeats (off then on, on then off), so that a machine warming up or slowing down favours neither.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from archsweep.tracking.wandb import offline_runs, read_offline_run
from bench._report import ROOT, header, write_block


def run(storage: Path, wandb: bool) -> tuple[float, str]:
    """(wall seconds, the command's output) of the demo's sweep with W&B on (offline) or off."""
    command = [sys.executable, "-m", "archsweep.cli", "sweep", "sweeps/quick.yaml", f"storage={storage}",
               f"tracking.wandb={str(wandb).lower()}", "tracking.mode=offline"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0 or "all 8 trials finished" not in done.stdout:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()

    pairs, kinds = [], {}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            timed = {wandb: run(Path(tmp) / ("on" if wandb else "off"), wandb)[0]
                     for wandb in ((False, True) if repeat % 2 == 0 else (True, False))}
            off, on = timed[False], timed[True]
            runs = [read_offline_run(p) for p in offline_runs(Path(tmp) / "on")]
            kinds = {k: sum(r["job_type"] == k for r in runs) for k in ("trial", "vqvae", "sweep-summary")}
            artifacts = sum(len(r["artifacts"]) for r in runs)
            size = sum(f.stat().st_size for p in offline_runs(Path(tmp) / "on") for f in p.rglob("*") if f.is_file())
        pairs.append((off, on))
        print(f"run {repeat + 1}: W&B off {off:.1f} s, W&B offline {on:.1f} s ({100 * (on - off) / off:+.1f} %)",
              flush=True)
    off, on = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    rows = "\n".join(f"| {i + 1} | {a:.1f} s | {b:.1f} s | {b - a:+.1f} s ({100 * (b - a) / a:+.1f} %) |"
                     for i, (a, b) in enumerate(pairs))
    body = (
        "### What W&B logging adds to the demo's sweep\n\n" + header() + "\n"
        "`archsweep sweep sweeps/quick.yaml` (the demo's sweep: 8 trials, NAS-Bench-201, a local Ray of all cores), "
        "each in its own process, with `tracking.wandb=false` and with W&B offline (alternating which goes first); "
        "wall time from start to exit, "
        f"both exiting 0 with all 8 trials finished. With W&B the sweep wrote {kinds.get('trial', 0)} trial runs "
        f"(each with its table of generated cells and its LM as an artifact), {kinds.get('vqvae', 0)} VQ-VAE stage "
        f"runs with their artifacts and {kinds.get('sweep-summary', 0)} sweep-summary run: {artifacts} artifact "
        f"records and {size / 2**20:.1f} MiB of run files.\n\n"
        "| run | W&B off | W&B offline | W&B's cost |\n|---|---|---|---|\n" + rows + "\n\n"
        f"Median: W&B adds {on - off:+.1f} s, {100 * (on - off) / off:+.1f} % of the demo's {off:.1f} s sweep.\n")
    print(body)
    if args.write:
        write_block("wandb-cost", body)


if __name__ == "__main__":
    main()
