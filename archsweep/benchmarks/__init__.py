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
from archsweep.benchmarks.table import Budget, Split, TableBenchmark
from archsweep.errors import UnknownNameError

__all__ = ["BENCHMARKS", "DATASETS", "Budget", "Split", "TableBenchmark", "check_data", "load_benchmark"]

BENCHMARKS = {nasbench101.NAME: nasbench101.load, nasbench201.NAME: nasbench201.load}
DATASETS = {nasbench101.NAME: (nasbench101.DATASET,), nasbench201.NAME: nasbench201.DATASETS}
FILES = {nasbench101.NAME: nasbench101.FILES, nasbench201.NAME: nasbench201.FILES}


def check_data(names, data_dir: str | os.PathLike | None = None) -> None:
    """Verify (sha256) every file the named benchmarks' tables are read from, or raise the DataError `load_benchmark`
    would raise later: run in the driver before any work starts, so a missing or damaged table fails in
    seconds instead of after training."""
    from archsweep.benchmarks.files import require

    for name in sorted(set(names)):
        if name not in FILES:
            raise UnknownNameError("benchmark", name, BENCHMARKS)
        for relpath in FILES[name]:
            require(relpath, data_dir)


def load_benchmark(name: str, data_dir: str | os.PathLike | None = None, **options) -> TableBenchmark:
    """Load a benchmark's table from the data directory (checksums verified). Options: NAS-Bench-101's
    `table="subset"|"full"`."""
    try:
        loader = BENCHMARKS[name]
    except KeyError:
        raise UnknownNameError("benchmark", name, BENCHMARKS) from None
    return loader(data_dir, **options)
