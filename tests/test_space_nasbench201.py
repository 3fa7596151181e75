"""NAS-Bench-201 space: arch strings, the fixed graph form, and the benchmark's own isomorphism classes."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from archsweep.errors import InvalidCellError
from archsweep.spaces import Cell, get_space
from archsweep.spaces import nasbench201 as nb

space = get_space("nasbench201")
BEST_CIFAR10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def table_rows(data_dir):
    with open(data_dir / "nasbench201" / "nats_bench_test_acc.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_graph_form_is_the_op_on_vertex_dag():
    assert space.ADJACENCY.tolist() == [
        [0, 1, 1, 0, 1, 0, 0, 0],  # input -> edges leaving node 0: (0,1) (0,2) (0,3)
        [0, 0, 0, 1, 0, 1, 0, 0],  # (0,1) -> edges leaving node 1: (1,2) (1,3)
        [0, 0, 0, 0, 0, 0, 1, 0],  # (0,2) -> (2,3)
        [0, 0, 0, 0, 0, 0, 1, 0],  # (1,2) -> (2,3)
        [0, 0, 0, 0, 0, 0, 0, 1],  # (0,3) -> output
        [0, 0, 0, 0, 0, 0, 0, 1],  # (1,3) -> output
        [0, 0, 0, 0, 0, 0, 0, 1],  # (2,3) -> output
        [0, 0, 0, 0, 0, 0, 0, 0],
    ]


def test_every_table_arch_string_round_trips_and_matches_the_unique_string(table_rows):
    assert len(table_rows) == 15_625
    for row in table_rows:
        cell = space.from_arch_str(row["ArchitectureString"])
        assert space.to_arch_str(cell) == row["ArchitectureString"]
        assert space.canonical_string(cell) == row["UniqueString"]


def test_enumeration_is_the_whole_space(table_rows):
    enum = space.enumerate()
    assert len(enum) == 15_625
    assert len(enum.index) == 6_466
    archs = {space.to_arch_str(enum.cell(k)) for k in range(len(enum))}
    assert archs == {row["ArchitectureString"] for row in table_rows}
    # classes of the canonical hash are exactly the table's UniqueString groups
    by_hash = {}
    for row in table_rows:
        by_hash.setdefault(space.canonical_hash(space.from_arch_str(row["ArchitectureString"])), set()).add(
            row["UniqueString"])
    assert len(by_hash) == 6_466 and all(len(group) == 1 for group in by_hash.values())


def test_known_classes():
    # skip into node 1 then conv on (1,3) computes what conv on (0,3) computes: one class
    a = space.from_arch_str("|skip_connect~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|none~2|")
    b = space.from_arch_str("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|none~2|")
    assert space.canonical_string(a) == space.canonical_string(b) == "#+#+(0)@nor_conv_3x3"
    assert space.canonical_hash(a) == space.canonical_hash(b)
    # the benchmark's rule zeroes an edge only from a node that is exactly "#": a skip from node 2 = "#+#"
    # keeps its terms, so this cell is a class of its own although it computes the same function
    c = space.from_arch_str("|none~0|+|none~0|none~1|+|nor_conv_3x3~0|none~1|skip_connect~2|")
    assert space.canonical_string(c) == "#+#+#+(0)@nor_conv_3x3"
    assert space.canonical_hash(c) != space.canonical_hash(b)


@pytest.mark.parametrize(
    "arch, message",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|", "3 '+'-separated nodes"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must be 'op~0'"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "needs 2 inputs"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "enclosed in '|'"),
    ],
)
def test_malformed_arch_strings(arch, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        space.from_arch_str(arch)


def test_invalid_cells():
    ops = ("input", *["none"] * 6, "output")
    assert space.why_invalid(Cell(space.ADJACENCY, ops)) is None
    wrong = np.array(space.ADJACENCY)
    wrong[0, 3] = 1
    assert "topology" in space.why_invalid(Cell(wrong, ops))
    assert "'conv5x5'" in space.why_invalid(Cell(space.ADJACENCY, ("input", "conv5x5", *["none"] * 5, "output")))
    assert "exactly 8" in space.why_invalid(Cell([[0, 1], [0, 0]], ["input", "output"]))
    with pytest.raises(InvalidCellError):
        space.canonical_hash(Cell(wrong, ops))


@given(st.lists(st.sampled_from(nb.OPS), min_size=6, max_size=6))
def test_graph_form_round_trip(edge_ops):
    cell = nb.cell_from_ops(edge_ops)
    graph = space.to_graph(cell)
    assert space.from_graph(graph.adjacency, graph.ops) == cell


def test_random_cell_uniform_and_valid():
    rng = np.random.default_rng(1)
    cells = [space.random_cell(rng) for _ in range(3_000)]
    assert all(space.is_valid(c) for c in cells)
    counts = np.unique([op for c in cells for op in c.ops[1:-1]], return_counts=True)[1]
    assert counts.min() > 0.8 * 3_600  # 18,000 edge ops over 5 choices


def test_best_cifar10_cell_parses():
    assert space.is_valid(space.from_arch_str(BEST_CIFAR10))


def test_graph_index_finds_every_enumerated_cell_and_nothing_else():
    from archsweep.spaces.enumeration import GraphIndex, graph_keys

    enum = space.enumerate()
    ops, adj = space.graph_arrays(enum)
    keys = graph_keys(ops, adj)
    assert len(set(keys.tolist())) == 15_625  # one key per cell
    index = GraphIndex(ops, adj, enum.hash)
    found = index.find(ops, adj)
    assert found.tolist() == list(range(15_625))
    k = 777
    assert index.hash_of(int(found[k])) == space.canonical_hash(space.from_graph(adj[k], ops[k]))
    # one edge more (not a NAS-Bench-201 graph) or a swapped op: not found, or found as exactly that other cell
    extra = adj[:100].copy()
    extra[:, 0, 7] = 1
    assert (index.find(ops[:100], extra) == -1).all()
    swapped = ops[:100].copy()
    swapped[:, 1] = np.where(swapped[:, 1] == 2, 3, 2)
    hits = index.find(swapped, adj[:100])
    assert (hits >= 0).all() and all((ops[h] == s).all() for h, s in zip(hits, swapped))
