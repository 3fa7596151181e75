"""NAS-Bench-201 (Dong & Yang, 2020): a fixed 4-node cell whose 6 edges each carry one of 5 operations.

The cell's graph form puts operations on vertices (as arch2vec does): vertex 0 is the input, vertices 1..6 are
the six edges in arch-string order, vertex 7 is the output; op-vertex (i -> j) feeds every op-vertex leaving
node j, and the edges into node 3 feed the output. That adjacency is the same for every cell, so a cell is
valid exactly when it has this adjacency, `input`/`output` at the ends and one of `OPS` on each edge.

Arch strings list the edges into node 1, 2, 3 with their source node:

>>> s = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|"
>>> to_arch_str(from_arch_str(s)) == s
True
>>> canonical_string(from_arch_str(s))
'#+(0)@nor_conv_3x3+((0)@nor_conv_3x3)@nor_conv_1x1+(0)@avg_pool_3x3'
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

import numpy as np

from archsweep.errors import InvalidCellError
from archsweep.spaces.cell import Cell, GraphArrays
from archsweep.spaces.enumeration import Enumeration

NAME = "nasbench201"
INPUT, OUTPUT = "input", "output"
NONE, SKIP = "none", "skip_connect"
OPS = (NONE, SKIP, "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (source node, target node), arch-string order
NUM_NODES = 4
NUM_VERTICES = len(EDGES) + 2
NUM_CELLS = len(OPS) ** len(EDGES)  # 15,625
NUM_CLASSES = 6_466  # isomorphism classes under the benchmark's canonical form
OP_VOCAB = (INPUT, *OPS, OUTPUT)


def _fixed_adjacency() -> np.ndarray:
    adj = np.zeros((NUM_VERTICES, NUM_VERTICES), dtype=np.uint8)
    for k, (src, dst) in enumerate(EDGES):
        if src == 0:
            adj[0, k + 1] = 1
        for m, (src2, _) in enumerate(EDGES):
            if src2 == dst:
                adj[k + 1, m + 1] = 1
        if dst == NUM_NODES - 1:
            adj[k + 1, NUM_VERTICES - 1] = 1
    adj.setflags(write=False)
    return adj


ADJACENCY = _fixed_adjacency()


def cell_from_ops(edge_ops: Sequence[str]) -> Cell:
    """The cell with `edge_ops[k]` on edge `EDGES[k]`."""
    if len(edge_ops) != len(EDGES):
        raise ValueError(f"a NAS-Bench-201 cell has {len(EDGES)} edge ops, got {len(edge_ops)}")
    return Cell(ADJACENCY, (INPUT, *edge_ops, OUTPUT))


def from_arch_str(arch: str) -> Cell:
    """Parse `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`; raises ValueError naming what is malformed."""
    nodes = arch.split("+")
    if len(nodes) != NUM_NODES - 1:
        raise ValueError(f"arch string needs {NUM_NODES - 1} '+'-separated nodes: {arch!r}")
    ops = []
    for target, node in enumerate(nodes, start=1):
        if not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"node {target} of {arch!r} must be enclosed in '|'")
        terms = node[1:-1].split("|")
        if len(terms) != target:
            raise ValueError(f"node {target} of {arch!r} needs {target} inputs, got {len(terms)}")
        for source, term in enumerate(terms):
            op, sep, src = term.rpartition("~")
            if not sep or src != str(source):
                raise ValueError(f"term {term!r} of {arch!r} must be 'op~{source}'")
            if op not in OPS:
                raise ValueError(f"unknown op {op!r} in {arch!r}; allowed: {', '.join(OPS)}")
            ops.append(op)
    return cell_from_ops(ops)


def to_arch_str(cell: Cell) -> str:
    _require_valid(cell)
    edge_ops = cell.ops[1:-1]
    nodes = []
    for target in range(1, NUM_NODES):
        terms = [f"{edge_ops[k]}~{src}" for k, (src, dst) in enumerate(EDGES) if dst == target]
        nodes.append("|" + "|".join(terms) + "|")
    return "+".join(nodes)


def why_invalid(cell: Cell) -> str | None:
    """The first rule the cell breaks, in words; None for a valid cell. Nothing is ever pruned or repaired."""
    if cell.num_vertices != NUM_VERTICES:
        return f"{cell.num_vertices} vertices, a NAS-Bench-201 cell has exactly {NUM_VERTICES}"
    if not np.array_equal(cell.adjacency, ADJACENCY):
        return "adjacency differs from the fixed NAS-Bench-201 topology"
    if cell.ops[0] != INPUT or cell.ops[-1] != OUTPUT:
        return f"ops must start with {INPUT!r} and end with {OUTPUT!r}"
    for op in cell.ops[1:-1]:
        if op not in OPS:
            return f"edge op {op!r}; allowed: {', '.join(OPS)}"
    return None


def is_valid(cell: Cell) -> bool:
    return why_invalid(cell) is None


def _require_valid(cell: Cell) -> None:
    reason = why_invalid(cell)
    if reason is not None:
        raise InvalidCellError(f"invalid NAS-Bench-201 cell ({reason}): {cell!r}")


def prune(cell: Cell) -> Cell:
    """NAS-Bench-201 cells keep all vertices; `none` edges are handled by the canonical form instead."""
    return cell


def canonical_string(cell: Cell) -> str:
    """The benchmark's isomorphism-canonical form (NATS-Bench `UniqueString`), computed node by node.

    Node 0 is "0". Each edge into a node contributes a term: `#` for `none` or when its source node is exactly
    "#" (zero in, zero out), the source's string for `skip_connect`, "(source)@op" otherwise. A node is its
    terms sorted and joined by "+". The output node's string is the cell's form: cells that compute the same
    function up to reordering of summands get the same string. 6,466 classes over the 15,625 cells.
    """
    _require_valid(cell)
    edge_ops = cell.ops[1:-1]
    node = ["0"]
    for target in range(1, NUM_NODES):
        terms = []
        for k, (src, dst) in enumerate(EDGES):
            if dst != target:
                continue
            op, value = edge_ops[k], node[src]
            if op == NONE or value == "#":
                terms.append("#")
            elif op == SKIP:
                terms.append(value)
            else:
                terms.append(f"({value})@{op}")
        node.append("+".join(sorted(terms)))
    return node[-1]


def canonical_hash(cell: Cell) -> str:
    """md5 (32 hex digits) of `canonical_string`: equal exactly for isomorphic cells."""
    return hashlib.md5(canonical_string(cell).encode("utf-8")).hexdigest()


def random_cell(rng: np.random.Generator) -> Cell:
    """Uniform over the 15,625 cells."""
    return cell_from_ops([OPS[i] for i in rng.integers(0, len(OPS), size=len(EDGES))])


def mutate(cell: Cell, rng: np.random.Generator) -> Cell:
    """One edge's op replaced by a different op (NAS-Bench-201's REA mutation); always a valid neighbour.

    >>> c = from_arch_str("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    >>> sum(a != b for a, b in zip(c.ops, mutate(c, np.random.default_rng(0)).ops))
    1
    """
    _require_valid(cell)
    ops = list(cell.ops[1:-1])
    k = int(rng.integers(len(EDGES)))
    ops[k] = [op for op in OPS if op != ops[k]][int(rng.integers(len(OPS) - 1))]
    return cell_from_ops(ops)


def to_graph(cell: Cell) -> GraphArrays:
    _require_valid(cell)
    return GraphArrays(np.array(ADJACENCY), np.array([OP_VOCAB.index(op) for op in cell.ops], dtype=np.int64))


def from_graph(adjacency: np.ndarray, ops: Sequence[int]) -> Cell:
    """The cell of a (decoded) graph as it is; a wrong topology or op stays invalid, never repaired."""
    return Cell(np.asarray(adjacency), tuple(OP_VOCAB[int(i)] for i in ops))


def build_enumeration(progress=None) -> Enumeration:
    """All 15,625 cells, edge ops in lexicographic order of `OPS` indices (edge 0 slowest)."""
    combos = np.array(list(itertools.product(range(len(OPS)), repeat=len(EDGES))), dtype=np.uint8)
    ops = np.empty((len(combos), NUM_VERTICES), dtype=np.uint8)
    ops[:, 0], ops[:, -1] = OP_VOCAB.index(INPUT), OP_VOCAB.index(OUTPUT)
    ops[:, 1:-1] = combos + 1
    hashes = np.array([np.frombuffer(bytes.fromhex(canonical_hash(cell_from_ops([OPS[i] for i in c]))), np.uint8)
                       for c in combos])
    edges = np.tile(Enumeration.pack_edges(ADJACENCY, NUM_VERTICES), (len(combos), 1))
    if progress is not None:
        progress(len(combos), len(combos))
    return Enumeration(NAME, OP_VOCAB, np.full(len(combos), NUM_VERTICES, np.uint8), edges, ops, hashes)
