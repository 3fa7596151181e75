"""DARTS (Liu et al., 2019): a normal and a reduction cell, too many to enumerate (about 1.08e18).

Each cell has two inputs (the outputs of the two previous cells, c_{k-2} and c_{k-1}: nodes 0 and 1) and four
intermediate nodes 2..5. Node j sums two inputs, each from a different earlier node and each through one of the
seven operations of a final DARTS genotype (`none` is not one). The cell's output concatenates nodes 2..5. A
genotype lists each cell's 8 (operation, input node) pairs, two per node in node order:

>>> g = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
...      "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=[2, 3, 4, "
...      "5], reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), "
...      "('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=[2, 3, 4, 5])")
>>> to_genotype(from_genotype(g)) == g
True

The graph form puts operations on vertices, 11 per cell: c_{k-2}, c_{k-1}, one vertex per (operation, input) pair
(vertex 2 + e for pair e), the output. An op vertex reads its input node: c_{k-2} or c_{k-1} directly, or both op
vertices of an intermediate node (whose sum that node is); every op vertex feeds the output. The normal cell is
vertices 0..10, the reduction cell 11..21, with no edge between them.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import itertools
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from archsweep.errors import InvalidCellError
from archsweep.spaces.cell import Cell, GraphArrays
from archsweep.spaces.enumeration import Enumeration, worker_pool

NAME = "darts"
OPS = ("max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
INPUTS = ("c_{k-2}", "c_{k-1}")
OUTPUT = "output"
OP_VOCAB = (*INPUTS, *OPS, OUTPUT)
CELLS = ("normal", "reduce")
NODES = 4  # intermediate nodes per cell, numbered 2..5
PAIRS = 2 * NODES  # (operation, input) pairs per cell
CELL_VERTICES = 2 + PAIRS + 1
NUM_VERTICES = 2 * CELL_VERTICES
CONCAT = list(range(2, 2 + NODES))
# one code per vertex (22): an op vertex's code carries its operation and its input (at most 7 x 6 = 42 kinds);
# 16 pooled codes learn far slower here (in 2 epochs on 100,000 cells: no input edge right, against 99 % of
# graphs with every edge right per vertex)
DEFAULT_LATENT = "per_node"
DEFAULT_SEQ_LEN = 16  # with vqvae.latent=pooled: 16 x 6 bits at K = 64 for the ~60 bits of a uniform genotype
DEFAULT_EDGE_WEIGHT = 10.0  # 231 edge entries a cell against 22 ops: the few that vary must not be drowned
# the 22 positions share one codebook and a position alone has up to 35 (operation, input) kinds: at K = 64 kinds
# share codes (held-out 22 % exact after 8 epochs: 23 % with every operation right, 96 % with every edge); at 256,
# 100 % after 2 epochs (the decoder starting at the marginals, `Decoder.start_at_marginals`)
DEFAULT_CODEBOOK_SIZE = 256
# the encoder keeps the 4 undirected GIN rounds of the NAS-Benches. One forward round (vqvae.gin_direction=forward,
# gin_layers=1: each code hears only the vertices feeding it) gave leaner codes (summed per-position code entropy
# 78.5 bits after 2 epochs, against 120 after 4 with the default; the cells carry ~60) and a lower LM held-out
# perplexity (8.10 against 9.95 per code after 5 LM epochs) but fewer valid samples at T = 1.0: 95.15 against
# 96.85 % (bench/lm.py's DARTS row at lm.epochs=5, one run each)
# cells up to the order of a node's two inputs: node j picks 2 of its j earlier nodes and an op for each
NUM_CELLS = (int(np.prod([(j * (j - 1)) // 2 for j in range(2, 2 + NODES)])) * len(OPS) ** PAIRS) ** 2


class Genotype(NamedTuple):
    normal: list[tuple[str, int]]
    normal_concat: list[int]
    reduce: list[tuple[str, int]]
    reduce_concat: list[int]


def _block_adjacency(sources: Sequence[int]) -> np.ndarray:
    """One cell's 11 x 11 adjacency from the input node of each of its 8 pairs."""
    adj = np.zeros((CELL_VERTICES, CELL_VERTICES), dtype=np.uint8)
    for e, src in enumerate(sources):
        if src < 2:
            adj[src, 2 + e] = 1
        else:
            adj[2 + 2 * (src - 2), 2 + e] = adj[3 + 2 * (src - 2), 2 + e] = 1
        adj[2 + e, CELL_VERTICES - 1] = 1
    return adj


def cell_from_pairs(normal: Sequence[tuple[str, int]], reduce: Sequence[tuple[str, int]]) -> Cell:
    """The cell (as given; `why_invalid` judges it) with these 8 (operation, input node) pairs per cell."""
    adj = np.zeros((NUM_VERTICES, NUM_VERTICES), dtype=np.uint8)
    ops: list[str] = []
    for k, pairs in enumerate((normal, reduce)):
        if len(pairs) != PAIRS:
            raise ValueError(f"a DARTS {CELLS[k]} cell has {PAIRS} (operation, input) pairs, got {len(pairs)}")
        for e, (_, src) in enumerate(pairs):
            if not (isinstance(src, (int, np.integer)) and not isinstance(src, bool) and 0 <= src < 2 + NODES):
                raise ValueError(f"{CELLS[k]} pair {e}: input node {src!r}; a DARTS cell's nodes are 0..{1 + NODES}")
        off = k * CELL_VERTICES
        adj[off:off + CELL_VERTICES, off:off + CELL_VERTICES] = _block_adjacency([int(s) for _, s in pairs])
        ops += [*INPUTS, *(str(op) for op, _ in pairs), OUTPUT]
    return Cell(adj, tuple(ops))


def from_genotype(text: str) -> Cell:
    """Parse the standard `Genotype(normal=[(op, input), ...], normal_concat=[2, 3, 4, 5], reduce=[...],
    reduce_concat=...)` string (`range(2, 6)` accepted for the concats). Read as literals, never evaluated;
    raises ValueError naming what is malformed."""
    try:
        call = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"not a Genotype(...) string: {exc.msg}: {text!r}") from None
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "Genotype"
            and not call.args):
        raise ValueError(f"expected Genotype(normal=..., normal_concat=..., reduce=..., reduce_concat=...): {text!r}")
    fields = {}
    for kw in call.keywords:
        node = kw.value
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range":
            try:
                span = range(*(ast.literal_eval(a) for a in node.args))
            except (ValueError, TypeError):
                raise ValueError(f"Genotype field {kw.arg!r}: {ast.unparse(node)!r} is no range of integers") from None
            fields[kw.arg] = span
        else:
            try:
                fields[kw.arg] = ast.literal_eval(node)
            except ValueError:
                raise ValueError(f"Genotype field {kw.arg!r} is not a literal: {ast.unparse(node)!r}") from None
    if set(fields) != set(Genotype._fields):
        raise ValueError(f"Genotype fields {sorted(fields)}; expected {list(Genotype._fields)}")
    pairs = {}
    for name in CELLS:
        value = fields[name]
        if not (isinstance(value, (list, tuple)) and all(
                isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], int)
                for p in value)):
            raise ValueError(f"Genotype {name} must be a list of (operation, input node) pairs: {value!r}")
        if len(value) != PAIRS:
            raise ValueError(f"Genotype {name} has {len(value)} pairs; a DARTS cell has {PAIRS} (2 per node)")
        concat = fields[f"{name}_concat"]
        if not (isinstance(concat, (list, tuple, range)) and len(concat) == NODES and list(concat) == CONCAT):
            raise ValueError(f"Genotype {name}_concat is {fields[name + '_concat']!r}; a DARTS cell concatenates "
                             f"all its intermediate nodes, {CONCAT}")
        pairs[name] = [(op, src) for op, src in value]
    return cell_from_pairs(pairs["normal"], pairs["reduce"])


def genotype(cell: Cell) -> Genotype:
    _require_valid(cell)
    return Genotype(*(v for k in range(2) for v in (_pairs(cell, k), list(CONCAT))))


def to_genotype(cell: Cell) -> str:
    g = genotype(cell)
    return (f"Genotype(normal={g.normal}, normal_concat={g.normal_concat}, reduce={g.reduce}, "
            f"reduce_concat={g.reduce_concat})")


def _source(adj: np.ndarray, v: int) -> int | None:
    """The input node op vertex `v` of one cell's block reads, None when its in-edges are no single node."""
    into = np.flatnonzero(adj[:, v]).tolist()
    if into in ([0], [1]):
        return into[0]
    if len(into) == 2 and into[0] >= 2 and into[0] % 2 == 0 and into[1] == into[0] + 1:
        return 2 + (into[0] - 2) // 2
    return None


def _pairs(cell: Cell, k: int) -> list[tuple[str, int]]:
    off = k * CELL_VERTICES
    block = cell.adjacency[off:off + CELL_VERTICES, off:off + CELL_VERTICES]
    return [(cell.ops[off + 2 + e], _source(block, 2 + e)) for e in range(PAIRS)]


def why_invalid(cell: Cell) -> str | None:
    """The first rule the cell breaks, in words; None for a valid cell. Nothing is ever pruned or repaired."""
    if cell.num_vertices != NUM_VERTICES:
        return f"{cell.num_vertices} vertices; a DARTS cell has exactly {NUM_VERTICES} (11 each, normal and reduce)"
    for k, name in enumerate(CELLS):
        off = k * CELL_VERTICES
        ops = cell.ops[off:off + CELL_VERTICES]
        if tuple(ops[:2]) != INPUTS or ops[-1] != OUTPUT:
            return f"{name} cell: vertices must start with {INPUTS[0]!r}, {INPUTS[1]!r} and end with {OUTPUT!r}"
        for e, op in enumerate(ops[2:-1]):
            if op not in OPS:
                extra = " (`none` is no part of a final genotype)" if op == "none" else ""
                return f"{name} cell, node {2 + e // 2}: operation {op!r}{extra}; allowed: {', '.join(OPS)}"
    outside = cell.adjacency.copy()
    for k in range(2):
        outside[k * CELL_VERTICES:(k + 1) * CELL_VERTICES, k * CELL_VERTICES:(k + 1) * CELL_VERTICES] = 0
    if outside.any():
        return "an edge joins the normal and the reduction cell; each cell is its own graph"
    for k, name in enumerate(CELLS):
        off = k * CELL_VERTICES
        block = cell.adjacency[off:off + CELL_VERTICES, off:off + CELL_VERTICES]
        sources = []
        for e in range(PAIRS):
            node, src = 2 + e // 2, _source(block, 2 + e)
            if src is None:
                return (f"{name} cell, node {node}: input {e % 2 + 1} reads no single earlier node (its op vertex "
                        f"{off + 2 + e} has in-edges from {np.flatnonzero(block[:, 2 + e]).tolist()})")
            if src >= node:
                return f"{name} cell, node {node}: input {e % 2 + 1} is node {src}, not an earlier node"
            sources.append(src)
        for j in range(NODES):
            if sources[2 * j] == sources[2 * j + 1]:
                return f"{name} cell, node {2 + j}: both inputs are node {sources[2 * j]}; they must differ"
        expected = _block_adjacency(sources)
        if not np.array_equal(block[:, -1], expected[:, -1]):
            return f"{name} cell: the output must concatenate all intermediate nodes {CONCAT} and nothing else"
        if not np.array_equal(block, expected):
            i, j = np.argwhere(block != expected)[0].tolist()
            what = "extra" if block[i, j] else "missing"
            return f"{name} cell: {what} edge {off + i} -> {off + j} (the output concatenates nodes {CONCAT})"
    return None


def is_valid(cell: Cell) -> bool:
    return why_invalid(cell) is None


def _require_valid(cell: Cell) -> None:
    reason = why_invalid(cell)
    if reason is not None:
        raise InvalidCellError(f"invalid DARTS cell ({reason}): {cell!r}")


def prune(cell: Cell) -> Cell:
    """Every intermediate node reaches the output (the concatenation), so nothing is ever pruned."""
    return cell


# new label of node 0..5 under each relabelling of the intermediate nodes (c_{k-2}, c_{k-1} stay)
_RELABELLINGS = [(0, 1, *p) for p in itertools.permutations(range(2, 2 + NODES))]


def _canonical_block(pairs: Sequence[tuple[str, int]]) -> tuple:
    """The least, over the 24 relabellings of the intermediate nodes, of the nodes' sorted input pairs in
    relabelled order: equal exactly for cells isomorphic with c_{k-2} and c_{k-1} kept in place."""
    nodes = [(pairs[2 * j], pairs[2 * j + 1]) for j in range(NODES)]
    best = None
    for new in _RELABELLINGS:
        form = [None] * NODES
        for j, ((op_a, a), (op_b, b)) in enumerate(nodes):
            x, y = (op_a, new[a]), (op_b, new[b])
            form[new[2 + j] - 2] = (x, y) if x <= y else (y, x)
        form = tuple(form)
        if best is None or form < best:
            best = form
    return best


def canonical_string(cell: Cell) -> str:
    """Both cells' canonical forms: invariant to the order of a node's two inputs and to relabellings of the
    intermediate nodes that give an isomorphic cell (the concatenation then reorders channels only)."""
    _require_valid(cell)
    return "|".join(f"{name}:" + ";".join("+".join(f"{op}~{src}" for op, src in node) for node in
                                           _canonical_block(_pairs(cell, k))) for k, name in enumerate(CELLS))


def canonical_hash(cell: Cell) -> str:
    """md5 (32 hex digits) of `canonical_string`."""
    return hashlib.md5(canonical_string(cell).encode("utf-8")).hexdigest()


def _random_pairs(rng: np.random.Generator) -> list[tuple[str, int]]:
    pairs = []
    for node in range(2, 2 + NODES):
        a, b = rng.choice(node, size=2, replace=False)
        pairs += [(OPS[int(rng.integers(len(OPS)))], int(a)), (OPS[int(rng.integers(len(OPS)))], int(b))]
    return pairs


def random_cell(rng: np.random.Generator) -> Cell:
    """Uniform over genotypes: each node two different earlier nodes and an operation for each, both cells."""
    return cell_from_pairs(_random_pairs(rng), _random_pairs(rng))


def mutate(cell: Cell, rng: np.random.Generator) -> Cell:
    """One pair of one cell changed: its operation for another, or its input for another earlier node that the
    node's other input is not (the DARTS-space REA mutation); always a valid neighbour."""
    _require_valid(cell)
    pairs = [_pairs(cell, 0), _pairs(cell, 1)]
    k, e = int(rng.integers(2)), int(rng.integers(PAIRS))
    op, src = pairs[k][e]
    node, other = 2 + e // 2, pairs[k][e ^ 1][1]
    inputs = [s for s in range(node) if s not in (src, other)]
    if inputs and rng.random() < 0.5:
        pairs[k][e] = (op, inputs[int(rng.integers(len(inputs)))])
    else:
        pairs[k][e] = ([o for o in OPS if o != op][int(rng.integers(len(OPS) - 1))], src)
    return cell_from_pairs(*pairs)


def to_graph(cell: Cell) -> GraphArrays:
    _require_valid(cell)
    return GraphArrays(np.array(cell.adjacency), np.array([OP_VOCAB.index(op) for op in cell.ops], dtype=np.int64))


def from_graph(adjacency: np.ndarray, ops: Sequence[int]) -> Cell:
    """The cell of a (decoded) graph as it is; a wrong structure or op stays invalid, never repaired."""
    return Cell(np.asarray(adjacency), tuple(OP_VOCAB[int(i)] for i in ops))


def _random_genotypes(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(operation indices, input nodes), each [count, 2 cells, 8 pairs]: as `random_cell`, vectorised."""
    ops = rng.integers(0, len(OPS), size=(count, 2, PAIRS))
    src = np.empty((count, 2, PAIRS), dtype=np.int64)
    for j in range(NODES):
        first = rng.integers(0, j + 2, size=(count, 2))
        second = rng.integers(0, j + 1, size=(count, 2))
        src[:, :, 2 * j], src[:, :, 2 * j + 1] = first, second + (second >= first)
    return ops, src


# `_canonical_block` for many blocks at once: an (operation, input) pair as the integer rank(op) * 6 + input, with
# operations ranked by name, orders as the tuples do; a node's sorted pair as lo * 42 + hi and a block's four nodes
# in base 42^2 keep that order, so the least integer over the relabellings is the least tuple
_RANK = np.argsort(np.argsort(OPS))
_PAIR = len(OPS) * (2 + NODES)
_NEW = np.array(_RELABELLINGS)
_PAIR_TEXT = ["+".join(f"{sorted(OPS)[x // (2 + NODES)]}~{x % (2 + NODES)}" for x in divmod(code, _PAIR))
              for code in range(_PAIR * _PAIR)]


def _canonical_texts(ops: np.ndarray, src: np.ndarray) -> list[str]:
    """The canonical form of each block ([N, 8] operation indices and inputs) as `canonical_string` writes it."""
    count = len(ops)
    keys = np.zeros((count, len(_NEW)), dtype=np.int64)
    forms = np.zeros((count, len(_NEW), NODES), dtype=np.int64)
    for r, new in enumerate(_NEW):
        x = _RANK[ops] * (2 + NODES) + new[src]
        pairs = np.minimum(x[:, 0::2], x[:, 1::2]) * _PAIR + np.maximum(x[:, 0::2], x[:, 1::2])
        forms[:, r, new[2:] - 2] = pairs
        keys[:, r] = forms[:, r] @ (_PAIR * _PAIR) ** np.arange(NODES - 1, -1, -1)
    best = forms[np.arange(count), keys.argmin(1)].tolist()
    return [";".join(_PAIR_TEXT[c] for c in form) for form in best]


def _hash_genotypes(arrays: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """`canonical_hash` of genotype arrays [N, 2 cells, 8 pairs], vectorised but for the md5."""
    ops, src = arrays
    texts = [_canonical_texts(ops[:, k], src[:, k]) for k in range(2)]
    return [hashlib.md5(f"{CELLS[0]}:{a}|{CELLS[1]}:{b}".encode()).hexdigest() for a, b in zip(*texts)]


def _graph_arrays(ops: np.ndarray, src: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Genotype arrays -> the graph form: ops [N, 22] (`OP_VOCAB` indices), adjacency [N, 22, 22]."""
    count = len(ops)
    vocab = np.zeros((count, NUM_VERTICES), dtype=np.uint8)
    adj = np.zeros((count, NUM_VERTICES, NUM_VERTICES), dtype=np.uint8)
    rows = np.arange(count)
    for k in range(2):
        off = k * CELL_VERTICES
        vocab[:, off:off + 2] = [0, 1]
        vocab[:, off + 2:off + 2 + PAIRS] = ops[:, k] + len(INPUTS)
        vocab[:, off + CELL_VERTICES - 1] = len(OP_VOCAB) - 1
        for e in range(PAIRS):
            s = src[:, k, e]
            first = np.where(s < 2, s, 2 + 2 * (s - 2))
            adj[rows, off + first, off + 2 + e] = 1
            adj[rows[s >= 2], off + first[s >= 2] + 1, off + 2 + e] = 1
            adj[:, off + 2 + e, off + CELL_VERTICES - 1] = 1
    return vocab, adj


def graph_genotypes(ops: np.ndarray, adj: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Graph forms [N, 22] / [N, 22, 22] -> (operation indices, input nodes) [N, 2, 8] and a mask of the valid ones:
    `why_invalid` for many decoded graphs at once. A graph is valid exactly when it equals the graph form of the
    genotype read off it and that genotype keeps the rules (earlier inputs, a node's two differ)."""
    ops, adj = np.asarray(ops), np.asarray(adj)
    count = len(ops)
    op_idx = np.zeros((count, 2, PAIRS), dtype=np.int64)
    src = np.zeros((count, 2, PAIRS), dtype=np.int64)
    for k in range(2):
        off = k * CELL_VERTICES
        op_idx[:, k] = (ops[:, off + 2:off + 2 + PAIRS].astype(np.int64) - len(INPUTS)).clip(0, len(OPS) - 1)
        into = adj[:, off:off + CELL_VERTICES, off + 2:off + 2 + PAIRS]  # [N, 11, 8]: in-edges of each op vertex
        first = into.argmax(1)  # the lowest vertex feeding it: c_{k-2}, c_{k-1} or node j's first op vertex
        src[:, k] = np.where(first < 2, first, 2 + (first - 2) // 2)
    node = 2 + np.arange(PAIRS) // 2
    ok = (src < node).all((1, 2)) & (src[:, :, 0::2] != src[:, :, 1::2]).all((1, 2))
    vocab, rebuilt = _graph_arrays(op_idx, src)
    ok &= (vocab == ops).all(1) & (rebuilt == adj).all((1, 2))
    return op_idx, src, ok


def graph_hashes(ops: np.ndarray, adj: np.ndarray) -> list[str | None]:
    """`canonical_hash` of each graph form, None where `why_invalid` would name a broken rule."""
    op_idx, src, ok = graph_genotypes(ops, adj)
    rows = np.flatnonzero(ok)
    hashes: list[str | None] = [None] * len(ok)
    for row, h in zip(rows.tolist(), _hash_genotypes((op_idx[rows], src[rows]))):
        hashes[row] = h
    return hashes


def sample_dataset(size: int, seed: int, progress=None, processes: int | None = None) -> Enumeration:
    """`size` random cells (as `random_cell`), distinct up to isomorphism, in the order drawn; the same for the
    same (size, seed). Hashed across `processes` worker processes (default: all cores) when large."""
    import os

    if size > NUM_CELLS:
        raise ValueError(f"{size} cells asked of a space of {NUM_CELLS}")
    rng = np.random.default_rng(seed)
    processes = processes or os.cpu_count() or 1
    chunk = 5_000
    kept_ops, kept_src, hashes, seen = [], [], [], set()
    with worker_pool(processes) if size > 2 * chunk and processes > 1 else contextlib.nullcontext() as pool:
        while len(hashes) < size:
            ops, src = _random_genotypes(rng, max(size - len(hashes), 64))
            parts = [(ops[i:i + chunk], src[i:i + chunk]) for i in range(0, len(ops), chunk)]
            digests = [h for part in (pool.imap(_hash_genotypes, parts) if pool else map(_hash_genotypes, parts))
                       for h in part]
            for n, digest in enumerate(digests):
                if digest not in seen and len(hashes) < size:
                    seen.add(digest)
                    hashes.append(digest)
                    kept_ops.append(ops[n])
                    kept_src.append(src[n])
            if progress is not None:
                progress(len(hashes), size)
    vocab, adj = _graph_arrays(np.stack(kept_ops), np.stack(kept_src))
    edges = np.packbits(adj.reshape(size, -1), axis=1)
    digests = np.frombuffer(bytes.fromhex("".join(hashes)), dtype=np.uint8).reshape(size, 16)
    return Enumeration(NAME, OP_VOCAB, np.full(size, NUM_VERTICES, np.uint8), edges, vocab, digests)
