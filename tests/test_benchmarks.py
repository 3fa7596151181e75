"""Benchmark tables: the known optima, the budget accounting, and a clear error for every bad query."""

from __future__ import annotations

import numpy as np
import pytest

from archsweep.benchmarks import load_benchmark
from archsweep.benchmarks.nasbench101 import read_naslib_specs
from archsweep.errors import InvalidCellError, NotInTableError, UnknownNameError
from archsweep.spaces import Cell


@pytest.fixture(scope="module")
def nb201(data_dir):
    return load_benchmark("nasbench201", data_dir)


@pytest.fixture(scope="module")
def nb101(data_dir):
    return load_benchmark("nasbench101", data_dir)


@pytest.fixture(autouse=True)
def _fresh_budget(request):
    for name in ("nb201", "nb101"):
        if name in request.fixturenames:
            request.getfixturevalue(name).budget.reset()


@pytest.mark.parametrize(
    "dataset, split, index, accuracy",
    [
        ("cifar10", "val", 6111, 91.61),
        ("cifar10", "test", 6111, 94.37),
        ("cifar100", "val", 9930, 73.49),
        ("cifar100", "test", 9930, 73.51),
        ("ImageNet16-120", "test", 857, 47.31),
    ],
)
def test_nb201_optima(nb201, dataset, split, index, accuracy):
    best_index, best = nb201.best(dataset, split)
    assert round(best, 2) == accuracy
    assert best_index == index


def test_nb201_imagenet_validation_optimum(nb201):
    assert round(nb201.best("ImageNet16-120", "val")[1], 2) == 46.73


def test_nb201_query_by_cell(nb201):
    cell = nb201.cell(6111)
    assert nb201.index_of(cell) == 6111
    assert nb201.query(cell, "cifar10", "test") == pytest.approx(94.37, abs=0.005)
    assert len(nb201) == 15_625 and nb201.splits == ("train", "val", "test")


def test_budget_counts_distinct_training_results(nb201):
    a, b = nb201.cell(0), nb201.cell(1)
    nb201.query(a, "cifar10", "val")
    nb201.query(a, "cifar10", "val")  # known already: free
    nb201.query(a, "cifar10", "train")  # the same training run
    nb201.query(a, "cifar10", "test")  # reporting: free
    assert (nb201.budget.queries, nb201.budget.test_lookups) == (1, 1)
    nb201.query(b, "cifar10", "val")
    nb201.query(a, "cifar100", "val")  # another dataset is another training run
    assert nb201.budget.queries == 3
    assert nb201.budget.queries_without_time == 3  # these NB201 tables carry no training times
    nb201.lookup(2, "cifar10", "val")
    assert nb201.budget.queries == 3


def test_isomorphic_nb201_cells_are_separate_entries(nb201):
    # the benchmark trained every one of the 15,625 cells, isomorphic or not
    a = nb201.space.from_arch_str("|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|")
    b = nb201.space.from_arch_str("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|")
    assert nb201.space.canonical_hash(a) == nb201.space.canonical_hash(b)
    assert nb201.index_of(a) != nb201.index_of(b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "imagenet"}, "unknown dataset of nasbench201 'imagenet'; allowed: cifar10, cifar100, ImageNet16-120"),
        ({"split": "valid"}, "allowed: train, val, test"),
        ({"epochs": 12}, "unknown epoch budget of nasbench201 12; allowed: 200"),
    ],
)
def test_nb201_bad_queries(nb201, kwargs, message):
    with pytest.raises(UnknownNameError) as info:
        nb201.query(nb201.cell(0), **kwargs)
    assert message in str(info.value)
    assert nb201.budget.queries == 0


def test_nb201_invalid_cell(nb201):
    with pytest.raises(InvalidCellError, match="invalid NAS-Bench-201 cell"):
        nb201.query(Cell([[0, 1], [0, 0]], ["input", "output"]))


def test_nb101_subset(nb101, nb101_cells):
    assert len(nb101) == 30_001
    assert "subset" in nb101.label and "validation accuracy only" in nb101.label
    assert nb101.splits == ("val",) and nb101.epochs == (4, 12, 36, 108)
    index, best = nb101.best()
    assert nb101.keys[index] == "096f593e0f12d65f6220bf8565b764a9"
    assert round(best, 2) == 94.91
    cell = nb101.cell(index)
    assert nb101.query(cell) == best
    assert nb101.budget.seconds == pytest.approx(4100.5703125)
    assert nb101.query(cell, epochs=4) < best  # a 4-epoch run is another training run
    assert nb101.budget.queries == 2 and nb101.budget.queries_without_time == 1


def test_every_cell_of_the_nb101_subset_is_read_back_under_its_key(data_dir, nb101_cells, monkeypatch):
    """Each of the 30,001 keys names a cell that hashes back to it, and the enumeration behind `cell` is loaded
    once for all of them (loading it per call made reading the whole table take hours)."""
    from archsweep.spaces import get_space

    space, loads = get_space("nasbench101"), []
    enumerate_once = space.enumerate
    monkeypatch.setattr(space, "enumerate", lambda *a, **k: loads.append(1) or enumerate_once(*a, **k))
    table = load_benchmark("nasbench101", data_dir)
    cells = [table.cell(i) for i in range(len(table))]
    assert [space.canonical_hash(c) for c in cells] == table.keys and len(loads) == 1


def test_nb101_gap_in_the_subset_is_not_an_invalid_cell(nb101, nb101_cells):
    missing = next(k for k in range(len(nb101_cells)) if nb101_cells.hash(k) not in set(nb101.keys))
    cell = nb101_cells.cell(missing)
    assert nb101.space.is_valid(cell)
    with pytest.raises(NotInTableError, match="valid in nasbench101 but has no entry in NAS-Bench-101 30,001-cell"):
        nb101.query(cell)
    assert cell not in nb101


def test_nb101_subset_has_no_test_split(nb101):
    with pytest.raises(UnknownNameError, match="validation accuracy only; for train/test accuracy load the full"):
        nb101.query(nb101.cell(0), split="test")


def test_naslib_specs_are_valid_enumerated_and_join_the_table(data_dir, nb101, nb101_cells):
    specs = read_naslib_specs(data_dir)
    assert len(specs) == 500
    space = nb101.space
    assert all(space.is_valid(cell) for cell, _ in specs)
    hashes = [space.canonical_hash(cell) for cell, _ in specs]
    assert all(h in nb101_cells.index for h in hashes)
    assert sum(space.prune(cell) != cell for cell, _ in specs) == 499  # raw samples, joined after pruning
    # NASLib's parameter counts (millions) agree with the table's wherever the two join
    params = dict(zip(nb101.keys, nb101_params(data_dir)))
    joined = [(m, h) for (_, m), h in zip(specs, hashes) if h in params]
    assert len(joined) == 110
    assert sum(round(params[h] / 1e6, 6) == round(m["params"], 6) for m, h in joined) == 109


def nb101_params(data_dir) -> list[int]:
    import json

    out = []
    for name in ("nb101_val_acc_20k.json", "nb101_val_acc_10k.json"):
        out += json.loads((data_dir / "nasbench101" / name).read_text())["trainable_parameters"]
    return out


def test_unknown_benchmark_and_table(data_dir):
    with pytest.raises(UnknownNameError, match="unknown benchmark 'nasbench301'; allowed: nasbench101, nasbench201"):
        load_benchmark("nasbench301", data_dir)
    with pytest.raises(UnknownNameError, match="allowed: subset, full"):
        load_benchmark("nasbench101", data_dir, table="big")


def test_accuracies_are_percentages(nb201, nb101):
    for column in [*nb201.accuracy.values(), *nb101.accuracy.values()]:
        assert np.nanmin(column) >= 0 and np.nanmax(column) <= 100
