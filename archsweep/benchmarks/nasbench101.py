"""NAS-Bench-101 accuracies: the 30,001-cell public subset (default) or Google's full table.

- `table="subset"`: `nb101_val_acc_{20k,10k}.json`, 30,001 cells (about 7 % of the space), **one training run
  each, validation accuracy only**, at 4/12/36/108 epochs, with the 108-epoch training time. A valid cell outside
  it raises NotInTableError: a gap in the table, not in the space.
- `table="full"`: `nasbench_only108.tfrecord` (all 423,624 cells, 3 runs each): train/val/test accuracy and
  training time at each budget the file has, as the mean over runs (the "mean of 3" of the literature). Parsed
  once, then cached as arrays in the cache directory.
Accuracies are in percent. Entries are keyed by the module hash, so cells join through `canonical_hash`.
"""

from __future__ import annotations

import ast
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from archsweep.benchmarks.files import FULL_NB101, require
from archsweep.benchmarks.table import TableBenchmark
from archsweep.benchmarks.tfrecord import read_nasbench101
from archsweep.errors import DataError, UnknownNameError
from archsweep.settings import cache_dir as resolve_cache
from archsweep.spaces import Cell, get_space

NAME = "nasbench101"
DATASET = "cifar10"
SUBSET_FILES = ("nasbench101/nb101_val_acc_20k.json", "nasbench101/nb101_val_acc_10k.json")
FILES = SUBSET_FILES  # what the default `load` reads
SUBSET_EPOCHS = (4, 12, 36, 108)
SUBSET_SIZE = 30_001
SUBSET_LABEL = "NAS-Bench-101 30,001-cell subset (one run, validation accuracy only)"
SPECS_FILE = "nasbench101/nb101_specs_500.json"
# Op codes of the NASLib spec file (its matrices are raw samples: 499 of 500 have dead vertices). Checked against
# the 30k table: with this mapping 110 specs join it and 109 have exactly its trainable-parameter count; each other
# assignment of codes 2-4 joins fewer and matches at most 89.
NASLIB_OPS = {0: "input", 1: "output", 2: "maxpool3x3", 3: "conv1x1-bn-relu", 4: "conv3x3-bn-relu"}
TABLES = ("subset", "full")


def _cells_by_hash(space, keys: list[str]):
    """The table's `cell_of`: the enumeration and its hash index are loaded on the first call and then kept (a
    load per call made reading every cell of the table take hours)."""
    enum = None

    def cell_of(index: int) -> Cell:
        nonlocal enum
        if enum is None:
            enum = space.enumerate()
        return enum.cell(enum.index[keys[index]])

    return cell_of


def load_subset(data_dir: str | os.PathLike | None = None) -> TableBenchmark:
    space = get_space(NAME)
    columns = [f"{e}_final_validation_accuracy" for e in SUBSET_EPOCHS] + ["final_training_time"]
    keys: list[str] = []
    values: dict[str, list[float]] = {c: [] for c in columns}
    for relpath in SUBSET_FILES:
        path = require(relpath, data_dir)
        try:
            table = json.loads(path.read_text())
            part = [table["key"], *(table[c] for c in columns)]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a NAS-Bench-101 accuracy table ({exc!r})") from None
        if len({len(col) for col in part}) != 1:
            raise DataError(f"{path}: its columns have different lengths")
        keys += part[0]
        for c, col in zip(columns, part[1:]):
            values[c] += col
    if len(set(keys)) != len(keys) or len(keys) != SUBSET_SIZE:
        raise DataError(f"NAS-Bench-101 subset: {len(set(keys))} distinct of {len(keys)} keys, expected {SUBSET_SIZE}")
    accuracy = {(DATASET, "val", e): 100.0 * np.asarray(values[f"{e}_final_validation_accuracy"], dtype=np.float64)
                for e in SUBSET_EPOCHS}
    missing = ("This table has one run's validation accuracy only; for train/test accuracy load the full table "
               "(table='full', after `archsweep data fetch --full-nb101`)")
    return TableBenchmark(
        name=NAME, label=SUBSET_LABEL, space=space, datasets=(DATASET,), epochs=SUBSET_EPOCHS, default_epochs=108,
        keys=keys, key_of=space.canonical_hash, accuracy=accuracy,
        train_seconds={(DATASET, 108): np.asarray(values["final_training_time"], dtype=np.float64)},
        cell_of=_cells_by_hash(space, keys), unavailable={"test": missing, "train": missing},
    )


def _parse_full(path: Path) -> dict[str, np.ndarray]:
    """Mean over runs of the final evaluation of every (cell, epochs) in the TFRecord, as arrays."""
    runs: dict[tuple[str, int], list[tuple[float, float, float, float]]] = defaultdict(list)
    order: dict[str, None] = {}
    for record in read_nasbench101(path):
        final = record.metrics.evaluation_data[-1] if record.metrics.evaluation_data else None
        if final is None:
            raise DataError(f"{path}: cell {record.module_hash} has a run without evaluation data")
        order.setdefault(record.module_hash)
        runs[(record.module_hash, record.epochs)].append(
            (final.train_accuracy, final.validation_accuracy, final.test_accuracy, final.training_time))
    keys = list(order)
    epochs = sorted({e for _, e in runs})
    index = {k: i for i, k in enumerate(keys)}
    out = {"keys": np.array(keys), "epochs": np.array(epochs)}
    for e in epochs:
        stats = np.full((len(keys), 4), np.nan)
        for (key, ep), rows in runs.items():
            if ep == e:
                stats[index[key]] = np.mean(rows, axis=0)
        for j, name in enumerate(("train", "val", "test", "seconds")):
            out[f"{name}_{e}"] = stats[:, j] * (1.0 if name == "seconds" else 100.0)
    return out


def load_full(data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None) -> TableBenchmark:
    path = require(FULL_NB101.path, data_dir)
    stat = path.stat()
    cache = resolve_cache(cache_dir) / f"nasbench101-full-{stat.st_size}-{stat.st_mtime_ns}.npz"
    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["keys"], arrays["epochs"]  # noqa: B018 (a cache without them is rebuilt)
    except Exception:  # absent, torn or foreign: rebuild from the verified TFRecord
        arrays = _parse_full(path)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)
    space = get_space(NAME)
    keys = [str(k) for k in arrays["keys"]]
    epochs = tuple(int(e) for e in arrays["epochs"])
    accuracy = {(DATASET, split, e): arrays[f"{split}_{e}"] for e in epochs for split in ("train", "val", "test")}
    return TableBenchmark(
        name=NAME, label=f"NAS-Bench-101 full table ({len(keys):,} cells, mean of runs)", space=space,
        datasets=(DATASET,), epochs=epochs, default_epochs=max(epochs), keys=keys, key_of=space.canonical_hash,
        accuracy=accuracy, train_seconds={(DATASET, e): arrays[f"seconds_{e}"] for e in epochs},
        cell_of=_cells_by_hash(space, keys),
    )


def load(data_dir: str | os.PathLike | None = None, table: str = "subset",
         cache_dir: str | os.PathLike | None = None) -> TableBenchmark:
    if table == "subset":
        return load_subset(data_dir)
    if table == "full":
        return load_full(data_dir, cache_dir)
    raise UnknownNameError("NAS-Bench-101 table", table, TABLES)


def read_naslib_specs(data_dir: str | os.PathLike | None = None) -> list[tuple[Cell, dict]]:
    """The 500 (cell, metrics) pairs of NASLib's NAS-Bench-101 file; keys are 49 adjacency entries + 7 op codes."""
    path = require(SPECS_FILE, data_dir)
    space = get_space(NAME)
    out = []
    for key, metrics in json.loads(path.read_text())["nasbench101"]["cifar10"].items():
        flat = ast.literal_eval(key)
        out.append((space.cell(np.reshape(flat[:49], (7, 7)), [NASLIB_OPS[c] for c in flat[49:]]), metrics))
    return out
