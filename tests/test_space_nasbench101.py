"""NAS-Bench-101 space: the benchmark's validity rules, pruning and module hash, pinned to exact facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archsweep.errors import InvalidCellError
from archsweep.spaces import Cell, get_space
from archsweep.spaces import nasbench101 as nb

space = get_space("nasbench101")
C3, C1, MP = nb.CONV3X3, nb.CONV1X1, nb.MAXPOOL3X3

# The best cell of the 30k subset table by 108-epoch validation accuracy (94.91 %), and its module hash there.
BEST_SUBSET_CELL = Cell(
    [[0, 1, 0, 0, 0, 1, 1], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1, 0],
     [0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0]],
    ["input", C3, MP, C3, C1, C3, "output"],
)
BEST_SUBSET_HASH = "096f593e0f12d65f6220bf8565b764a9"


def chain(*ops: str) -> Cell:
    n = len(ops) + 2
    return Cell(np.eye(n, k=1, dtype=int), ["input", *ops, "output"])


# --- validity and pruning: one case per rule --------------------------------------------------------------------


def test_valid_chain():
    assert space.why_invalid(chain(C3, C1, MP)) is None


@pytest.mark.parametrize(
    "cell, reason",
    [
        (Cell([[0, 2], [0, 0]], ["input", "output"]), "0 or 1"),
        (Cell([[0, 1, 0], [0, 0, 1], [1, 0, 0]], ["input", C3, "output"]), "upper-triangular"),
        (Cell([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", C3, "output"]), "no path"),
        (chain(C3, C3, C3, C3, C3, C3), "8 vertices after pruning"),
        (Cell(np.triu(np.ones((7, 7), dtype=int), 1), ["input", C3, C3, C3, C3, C3, "output"]), "21 edges"),
        (Cell(np.eye(3, k=1, dtype=int), ["output", C3, "output"]), "first op"),
        (Cell(np.eye(3, k=1, dtype=int), ["input", C3, "input"]), "last op"),
        (chain(C3, "conv5x5"), "'conv5x5'"),
    ],
)
def test_invalid_cells_name_the_rule(cell, reason):
    assert reason in space.why_invalid(cell)
    assert not space.is_valid(cell)
    with pytest.raises(InvalidCellError, match="invalid NAS-Bench-101 cell"):
        space.canonical_hash(cell)


def test_ten_edges_is_one_too_many():
    adj = np.zeros((7, 7), dtype=int)
    for i, j in [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 6), (2, 6), (3, 6), (4, 6), (5, 6)]:
        adj[i, j] = 1
    assert "10 edges" in space.why_invalid(Cell(adj, ["input", C3, C3, C3, C3, C3, "output"]))
    adj[0, 5], adj[4, 6], adj[4, 5] = 0, 0, 1  # 0->5 and 4->6 become 4->5: nine edges
    assert space.is_valid(Cell(adj, ["input", C3, C3, C3, C3, C3, "output"]))


def test_dead_vertices_are_pruned_whatever_their_op():
    # vertex 2 has no input and vertex 3 no output: both are dropped, with their (even unknown) ops
    cell = Cell([[0, 1, 0, 0, 0], [0, 0, 0, 1, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
                ["input", C1, "bogus", MP, "output"])
    pruned = space.prune(cell)
    assert pruned == Cell([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", C1, "output"])
    assert space.is_valid(cell)
    assert space.canonical_hash(cell) == space.canonical_hash(pruned)


def test_pruning_leaves_at_most_seven():
    # nine vertices given, two of them dead: valid, since the rules apply after pruning
    adj = np.eye(9, k=1, dtype=int)
    adj[0, 1], adj[1, 2], adj[0, 3] = 0, 0, 1
    cell = Cell(adj, ["input", C3, C3, C3, C3, C3, C3, C3, "output"])
    assert space.prune(cell).num_vertices == 7
    assert space.is_valid(cell)


def test_input_to_output_directly():
    assert space.is_valid(Cell([[0, 1], [0, 0]], ["input", "output"]))


# --- the module hash --------------------------------------------------------------------------------------------


def test_hash_equals_the_benchmark_module_hash():
    assert space.canonical_hash(BEST_SUBSET_CELL) == BEST_SUBSET_HASH
    # input -> output alone: the table lists it as 043721b9... (882,570 parameters, 83.58 % validation)
    assert space.canonical_hash(Cell([[0, 1], [0, 0]], ["input", "output"])) == "043721b9c7fe8c5fad811d47d83132ec"


def random_topological_relabel(cell: Cell, rng: np.random.Generator) -> Cell:
    """The same cell with its vertices renumbered in another topological order (still upper-triangular)."""
    n, adj = cell.num_vertices, cell.adjacency
    indeg = adj.sum(axis=0).astype(int)
    order, ready = [], [0]
    while ready:
        v = ready.pop(int(rng.integers(len(ready))))
        order.append(v)
        for w in np.flatnonzero(adj[v]):
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(int(w))
    assert len(order) == n and order[0] == 0 and order[-1] == n - 1
    return Cell(adj[np.ix_(order, order)], [cell.ops[v] for v in order])


seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=300, deadline=None)
@given(seeds)
def test_hash_invariant_under_upper_triangular_relabelling(seed):
    rng = np.random.default_rng(seed)
    cell = space.random_cell(rng)
    other = random_topological_relabel(cell, rng)
    assert space.is_valid(other)
    assert space.canonical_hash(other) == space.canonical_hash(cell)


@settings(max_examples=300, deadline=None)
@given(seeds)
def test_hash_changes_when_an_op_changes(seed):
    rng = np.random.default_rng(seed)
    cell = space.random_cell(rng)
    if cell.num_vertices == 2:
        return
    v = int(rng.integers(1, cell.num_vertices - 1))
    new_op = [op for op in nb.OPS if op != cell.ops[v]][int(rng.integers(2))]
    changed = Cell(cell.adjacency, [*cell.ops[:v], new_op, *cell.ops[v + 1:]])
    assert space.canonical_hash(changed) != space.canonical_hash(cell)


@st.composite
def raw_cells(draw):
    n = draw(st.integers(2, 9))
    bits = draw(st.lists(st.integers(0, 1), min_size=n * n, max_size=n * n))
    ops = ["input", *draw(st.lists(st.sampled_from([*nb.OPS, "bogus"]), min_size=n - 2, max_size=n - 2)), "output"]
    return Cell(np.triu(np.reshape(bits, (n, n)), 1), ops)


@settings(max_examples=500, deadline=None)
@given(raw_cells())
def test_pruning_is_idempotent_and_keeps_validity(cell):
    pruned = space.prune(cell)
    if pruned is None:
        assert not space.is_valid(cell)
        return
    assert space.prune(pruned) == pruned
    assert space.is_valid(pruned) == space.is_valid(cell)
    if space.is_valid(cell):
        assert space.canonical_hash(pruned) == space.canonical_hash(cell)


@settings(max_examples=200, deadline=None)
@given(seeds)
def test_graph_form_round_trip(seed):
    cell = space.random_cell(np.random.default_rng(seed))
    graph = space.to_graph(cell)
    assert graph.adjacency.shape == (7, 7) and graph.ops.shape == (7,)
    assert nb.OP_VOCAB[graph.ops[-1]] == "output"
    back = space.from_graph(graph.adjacency, graph.ops)
    assert space.prune(back) == space.prune(cell)
    assert space.canonical_hash(back) == space.canonical_hash(cell)


def test_connected_pad_vertex_is_invalid_not_repaired():
    graph = space.to_graph(chain(C3))
    adj, ops = graph.adjacency.copy(), graph.ops.copy()
    adj[0, 2] = adj[2, 6] = 1  # wire a pad vertex into the cell
    assert "'pad'" in space.why_invalid(space.from_graph(adj, ops))


def test_random_cell_is_valid_and_pruned():
    rng = np.random.default_rng(0)
    for _ in range(200):
        cell = space.random_cell(rng)
        assert space.is_valid(cell) and space.prune(cell) == cell


# --- enumeration ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_enumeration_exact(nb101_cells):
    enum = nb101_cells
    assert len(enum) == 423_624
    assert len(enum.index) == 423_624  # distinct module hashes
    # cells by vertex count, as enumerated (2..7 vertices)
    assert np.bincount(enum.num_vertices).tolist() == [0, 0, 1, 6, 84, 2_441, 62_010, 359_082]
    assert enum.num_edges.max() == 9
    rng = np.random.default_rng(0)
    for k in rng.choice(len(enum), size=3_000, replace=False):
        cell = enum.cell(int(k))
        assert space.is_valid(cell) and space.prune(cell) == cell
        assert space.canonical_hash(cell) == enum.hash(int(k))
    assert BEST_SUBSET_HASH in enum.index


@pytest.mark.slow
def test_every_subset_table_hash_is_enumerated(nb101_cells, data_dir):
    keys = set()
    for name in ("nb101_val_acc_20k.json", "nb101_val_acc_10k.json"):
        keys |= set(json.loads((data_dir / "nasbench101" / name).read_text())["key"])
    assert len(keys) == 30_001
    assert keys <= nb101_cells.index.keys()


def test_enumeration_cache_round_trip(nb101_cells, tmp_path):
    path = tmp_path / "cells.npz"
    nb101_cells.save(path)
    loaded = type(nb101_cells).load(path)
    for name in ("num_vertices", "edges", "ops", "hashes"):
        assert np.array_equal(getattr(loaded, name), getattr(nb101_cells, name))
    assert loaded.cell(12_345) == nb101_cells.cell(12_345)


def test_graph_index_keys_every_cell_apart(nb101_cells):
    from archsweep.spaces import get_space
    from archsweep.spaces.enumeration import GraphIndex

    nb101 = get_space("nasbench101")
    ops, adj = nb101.graph_arrays(nb101_cells)
    index = GraphIndex(ops, adj, nb101_cells.hash)
    assert len(set(index.keys.tolist())) == 423_624  # 7 ops x 3 bits + 21 edge bits: no two cells share a key
    rows = np.arange(0, len(ops), 997)
    assert (index.find(ops[rows], adj[rows]) == rows).all()
    for k in rows[:20]:
        cell = nb101.from_graph(adj[k], ops[k])
        assert index.hash_of(int(k)) == nb101.canonical_hash(cell) and nb101.is_valid(cell)


POOL_UNDER_A_CAUGHT_SIGTERM = """
import signal
from archsweep.spaces.enumeration import worker_pool
signal.signal(signal.SIGTERM, lambda *_: None)  # as a Ray worker does: a Python handler that does not exit
def square(x):
    return x * x
with worker_pool(2) as pool:
    assert sum(pool.imap(square, range(100))) == 328350
try:
    with worker_pool(2) as pool:
        for i, _ in enumerate(pool.imap(square, range(100))):
            if i == 3:
                raise KeyError("stop")  # the error path: the pool terminates its workers
except KeyError:
    print("ended", flush=True)
"""


def test_the_hashing_pool_ends_inside_a_process_that_catches_sigterm(tmp_path):
    """Forked from a Ray worker, pool workers inherit its SIGTERM handler: Pool.terminate then never ended them
    and a sweep trial hung in the enumeration's pool exit. Both exits (done, and an error) must end."""
    script = tmp_path / "pool.py"
    script.write_text(POOL_UNDER_A_CAUGHT_SIGTERM)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ended"]
