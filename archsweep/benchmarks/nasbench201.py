"""NAS-Bench-201 accuracies of all 15,625 cells after 200 epochs, from the four public CSV tables.

Columns, as NAS papers use them (select on `val`, report `test`):
- cifar10: `train`/`val` of the model trained on half of the training set (`cifar10-valid`, val optimum 91.61);
  `test` of the model trained on train+valid (`nats_bench_test_acc.csv`, optimum 94.37).
- cifar100, ImageNet16-120: train, validation (x-valid) and test (x-test) from their own table.
Entry i is the benchmark's architecture index i.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from archsweep.benchmarks.files import require
from archsweep.benchmarks.table import TableBenchmark
from archsweep.errors import DataError
from archsweep.spaces import get_space

NAME = "nasbench201"
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")
EPOCHS = 200
LABEL = "NAS-Bench-201 (15,625 cells, 200 epochs, mean over seeds)"
TEST_FILE = "nasbench201/nats_bench_test_acc.csv"
TEST_COLUMNS = {"cifar10": "CIFAR10TestAccuracy200Epochs", "cifar100": "CIFAR100TestAccuracy200Epochs",
                "ImageNet16-120": "ImageNetTestAccuracy200Epochs"}
RUN_COLUMNS = {"train": "train accuracy", "val": "validation accuracy", "test": "test accuracy"}
FILES = (TEST_FILE, *(f"nasbench201/nasbench201_{dataset}.csv" for dataset in DATASETS))  # what `load` reads


def _read(path: Path, columns: list[str]) -> tuple[list[str], dict[str, np.ndarray]]:
    """(arch strings, {column: float array}) of a CSV, each value checked; DataError names file and line."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        arch_col = "arch str" if "arch str" in (reader.fieldnames or []) else "ArchitectureString"
        missing = [c for c in [arch_col, *columns] if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing columns {missing}; found {reader.fieldnames}")
        archs, values = [], {c: [] for c in columns}
        for row in reader:
            try:
                archs.append(row[arch_col])
                for c in columns:
                    values[c].append(float(row[c]))
            except (TypeError, ValueError) as exc:
                raise DataError(f"{path}, line {reader.line_num}: {exc}") from None
    return archs, {c: np.asarray(v, dtype=np.float64) for c, v in values.items()}


def load(data_dir: str | os.PathLike | None = None) -> TableBenchmark:
    space = get_space(NAME)
    archs, test = _read(require(TEST_FILE, data_dir), list(TEST_COLUMNS.values()))
    if len(archs) != space.num_cells:
        raise DataError(f"{TEST_FILE}: {len(archs)} rows, expected {space.num_cells}")
    accuracy = {}
    for dataset in DATASETS:
        relpath = FILES[1 + DATASETS.index(dataset)]
        run_archs, run = _read(require(relpath, data_dir), list(RUN_COLUMNS.values()))
        if run_archs != archs:
            raise DataError(f"{relpath}: its rows are not in the architecture order of {TEST_FILE}")
        for split, column in RUN_COLUMNS.items():
            accuracy[(dataset, split, EPOCHS)] = run[column]
    for dataset, column in TEST_COLUMNS.items():
        if dataset == "cifar10":  # the train+valid model; the other datasets keep their own x-test column
            accuracy[(dataset, "test", EPOCHS)] = test[column]
    return TableBenchmark(
        name=NAME, label=LABEL, space=space, datasets=DATASETS, epochs=(EPOCHS,), default_epochs=EPOCHS,
        keys=archs, key_of=space.to_arch_str, accuracy=accuracy,
        cell_of=lambda i: space.from_arch_str(archs[i]),
    )
