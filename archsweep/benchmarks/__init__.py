"""Benchmark tables behind one query interface (no torch, no ray).

Example (needs the data directory)::

    bench = load_benchmark("nasbench201")
    cell = bench.space.from_arch_str("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    bench.query(cell, dataset="cifar10", split="val")   # 90.77, charged: bench.budget.queries == 1
    bench.query(cell, dataset="cifar10", split="test")  # 93.66, free: bench.budget.test_lookups == 1
"""

from __future__ import annotations

import os

from archsweep.benchmarks import nasbench101, nasbench201
from archsweep.benchmarks.files import require
from archsweep.benchmarks.table import Budget, Split, TableBenchmark
from archsweep.errors import ArchsweepError, UnknownNameError
from archsweep.spaces import SPACES

__all__ = ["BENCHMARKS", "DATASETS", "Budget", "Split", "TableBenchmark", "check_data", "has_table", "load_benchmark",
           "require_table"]

BENCHMARKS = {nasbench101.NAME: nasbench101.load, nasbench201.NAME: nasbench201.load}
DATASETS = {nasbench101.NAME: (nasbench101.DATASET,), nasbench201.NAME: nasbench201.DATASETS}
FILES = {nasbench101.NAME: nasbench101.FILES, nasbench201.NAME: nasbench201.FILES}


def has_table(space: str) -> bool:
    """Whether the space has an accuracy table here; a space without one generates and is scored (validity,
    uniqueness, novelty) but has no accuracies ("n/a" in reports) and cannot be searched."""
    return space in BENCHMARKS


def require_table(space: str) -> None:
    """Raise, naming the space, where a search (which queries accuracies) cannot run."""
    if not has_table(space):
        raise ArchsweepError(f"the {space} space has no accuracy table (archsweep has tables for "
                             f"{', '.join(BENCHMARKS)}), so a search on it has nothing to query; generate on it "
                             "with `archsweep run`/sweeps, and search on a space with a table")


def check_data(names, data_dir: str | os.PathLike | None = None) -> None:
    """Verify (sha256) every file the named benchmarks' tables are read from, or raise the DataError `load_benchmark`
    would raise later: run in the driver before any work starts, so a missing or damaged table fails in
    seconds instead of after training. Spaces without a table are skipped."""
    for name in sorted(set(names)):
        if name not in FILES:
            if name in SPACES:
                continue
            raise UnknownNameError("benchmark", name, BENCHMARKS)
        for relpath in FILES[name]:
            require(relpath, data_dir)


def load_benchmark(name: str, data_dir: str | os.PathLike | None = None, **options) -> TableBenchmark:
    """Load a benchmark's table from the data directory (checksums verified). Options: NAS-Bench-101's
    `table="subset"|"full"`."""
    if name in SPACES:
        require_table(name)
    try:
        loader = BENCHMARKS[name]
    except KeyError:
        raise UnknownNameError("benchmark", name, BENCHMARKS) from None
    return loader(data_dir, **options)
