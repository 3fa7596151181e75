"""Measure the NAS-Bench-101 enumeration (from scratch, all cores), loading its cache, and `archsweep --help`.

    python -m bench.enumerate_nb101 [--repeats 3] [--write]

Each enumeration runs in a fresh cache directory, so nothing is reused; `--write` records the result in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from archsweep.spaces import get_space
from archsweep.spaces.enumeration import Enumeration
from bench._report import header, write_block


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="record the result in docs/BENCHMARKS.md")
    args = parser.parse_args()
    space = get_space("nasbench101")

    builds, loads = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            enum = space.enumerate(cache_dir=cache)
            builds.append(time.perf_counter() - start)
            path = Path(cache) / "nasbench101-cells.npz"
            size = path.stat().st_size
            for _ in range(5):
                start = time.perf_counter()
                loaded = Enumeration.load(path)
                _ = loaded.index  # the hash -> cell map, which queries need
                loads.append(time.perf_counter() - start)
    assert len(enum) == 423_624

    cli = str(Path(sys.executable).with_name("archsweep"))
    helps = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([cli, "--help"], check=True, capture_output=True)
        helps.append(time.perf_counter() - start)

    body = (
        "### NAS-Bench-101 enumeration\n\n" + header() + "\n"
        "| what | result |\n|---|---|\n"
        f"| unique cells | {len(enum):,} |\n"
        f"| enumerate from scratch ({os.cpu_count()} processes), median of {len(builds)} | "
        f"{statistics.median(builds):.1f} s (min {min(builds):.1f}, max {max(builds):.1f}) |\n"
        f"| cache file | {size / 2**20:.1f} MiB (`.npz`, uncompressed) |\n"
        f"| load cache + build hash index, median of {len(loads)} | {statistics.median(loads):.3f} s |\n"
        f"| `archsweep --help`, median of {len(helps)} | {statistics.median(helps):.3f} s |\n"
    )
    print(body)
    if args.write:
        write_block("enumerate_nb101", body)


if __name__ == "__main__":
    main()
