"""NAS-Bench-101 (Ying et al., 2019): DAG cells of at most 7 vertices and 9 edges, ops on vertices.

Validity follows the benchmark's rules exactly: the adjacency matrix is binary and upper-triangular; vertices
that are not on an input -> output path are pruned; the pruned cell has at most 7 vertices and 9 edges, its
first op is `input`, its last `output`, and every other op is one of `OPS`. The canonical hash is the
benchmark's own module hash of the pruned cell, so it joins directly to the benchmark tables.

>>> cell = Cell([[0, 1, 1], [0, 0, 1], [0, 0, 0]], ["input", "conv3x3-bn-relu", "output"])
>>> why_invalid(cell) is None
True
>>> prune(Cell([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", "maxpool3x3", "output"])) is None  # no path
True
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence

import numpy as np

from archsweep.errors import InvalidCellError
from archsweep.spaces.cell import Cell, GraphArrays, upper_triangular
from archsweep.spaces.enumeration import Enumeration, worker_pool

NAME = "nasbench101"
INPUT, OUTPUT, PAD = "input", "output", "pad"
CONV3X3, CONV1X1, MAXPOOL3X3 = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
OPS = (CONV3X3, CONV1X1, MAXPOOL3X3)
MAX_VERTICES = 7
MAX_EDGES = 9
NUM_CELLS = 423_624  # unique cells (distinct module hashes) in the benchmark
# Vertex labels of the module hash; they make the hash equal to the dataset's `module_hash`.
HASH_LABELS = {INPUT: -1, CONV3X3: 0, CONV1X1: 1, MAXPOOL3X3: 2, OUTPUT: -2}
# Vocabulary of the fixed-size graph form; `pad` marks unused vertices of cells smaller than 7.
OP_VOCAB = (INPUT, CONV3X3, CONV1X1, MAXPOOL3X3, OUTPUT, PAD)


def _reachable(adjacency: np.ndarray, start: int) -> np.ndarray:
    """Boolean mask of the vertices reachable from `start` along the edges of `adjacency`."""
    seen = np.zeros(adjacency.shape[0], dtype=bool)
    seen[start] = True
    stack = [start]
    while stack:
        for w in np.flatnonzero(adjacency[stack.pop()]):
            if not seen[w]:
                seen[w] = True
                stack.append(int(w))
    return seen


def prune(cell: Cell) -> Cell | None:
    """Drop every vertex that is not on a path from the input (vertex 0) to the output (the last vertex).

    Returns None when the output cannot be reached from the input: such a cell computes nothing.
    Pruning is idempotent: `prune(prune(c)) == prune(c)`.
    """
    n = cell.num_vertices
    if n < 2:
        return None
    keep = _reachable(cell.adjacency, 0) & _reachable(cell.adjacency.T, n - 1)
    if not keep[n - 1]:
        return None
    idx = np.flatnonzero(keep)
    return Cell(cell.adjacency[np.ix_(idx, idx)], tuple(cell.ops[i] for i in idx))


def why_invalid(cell: Cell) -> str | None:
    """The first NAS-Bench-101 rule the cell breaks, in words; None for a valid cell."""
    adj = cell.adjacency
    if adj.size and adj.max() > 1:
        return "adjacency entries must be 0 or 1"
    if not upper_triangular(adj):
        return "adjacency must be strictly upper-triangular (edges go from lower to higher vertex)"
    pruned = prune(cell)
    if pruned is None:
        return "no path from the input (first vertex) to the output (last vertex)"
    if pruned.num_vertices > MAX_VERTICES:
        return f"{pruned.num_vertices} vertices after pruning, at most {MAX_VERTICES} allowed"
    if pruned.num_edges > MAX_EDGES:
        return f"{pruned.num_edges} edges after pruning, at most {MAX_EDGES} allowed"
    if pruned.ops[0] != INPUT:
        return f"first op must be {INPUT!r}, got {pruned.ops[0]!r}"
    if pruned.ops[-1] != OUTPUT:
        return f"last op must be {OUTPUT!r}, got {pruned.ops[-1]!r}"
    for op in pruned.ops[1:-1]:
        if op not in OPS:
            return f"op {op!r} on a live vertex; allowed: {', '.join(OPS)}"
    return None


def is_valid(cell: Cell) -> bool:
    return why_invalid(cell) is None


def _require_valid(cell: Cell) -> None:
    reason = why_invalid(cell)
    if reason is not None:
        raise InvalidCellError(f"invalid NAS-Bench-101 cell ({reason}): {cell!r}")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _module_hash(labels: Sequence[int], preds: Sequence[Sequence[int]], succs: Sequence[Sequence[int]]) -> str:
    """The benchmark's iterated-md5 graph hash (Weisfeiler-Lehman style), on adjacency lists.

    Each vertex starts as md5 of "(out_degree, in_degree, label)"; then, once per vertex, it becomes md5 of
    its sorted in-neighbour hashes, "|", its sorted out-neighbour hashes, "|", its own hash. The cell's hash
    is md5 of the printed sorted list of vertex hashes. Isomorphic labelled graphs get the same hash.
    """
    n = len(labels)
    h = [_md5(str((len(succs[v]), len(preds[v]), labels[v]))) for v in range(n)]
    for _ in range(n):
        h = [
            _md5("".join(sorted([h[w] for w in preds[v]])) + "|" + "".join(sorted([h[w] for w in succs[v]])) + "|" + h[v])
            for v in range(n)
        ]
    return _md5(str(sorted(h)))


def _adjacency_lists(adjacency: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    n = adjacency.shape[0]
    preds = [np.flatnonzero(adjacency[:, v]).tolist() for v in range(n)]
    succs = [np.flatnonzero(adjacency[v]).tolist() for v in range(n)]
    return preds, succs


def canonical_hash(cell: Cell) -> str:
    """Module hash of the pruned cell (32 hex digits), equal to the benchmark's `module_hash` key."""
    _require_valid(cell)
    pruned = prune(cell)
    preds, succs = _adjacency_lists(pruned.adjacency)
    return _module_hash([HASH_LABELS[op] for op in pruned.ops], preds, succs)


def random_cell(rng: np.random.Generator) -> Cell:
    """A random valid cell, sampled as the benchmark's authors do: a 7x7 upper-triangular matrix with each
    edge present with probability 1/2 and uniform inner ops, redrawn until valid; returned pruned."""
    while True:
        adj = np.triu(rng.integers(0, 2, size=(MAX_VERTICES, MAX_VERTICES)), k=1)
        ops = (INPUT, *(OPS[i] for i in rng.integers(0, len(OPS), size=MAX_VERTICES - 2)), OUTPUT)
        cell = Cell(adj, ops)
        if is_valid(cell):
            return prune(cell)


def mutate(cell: Cell, rng: np.random.Generator) -> Cell:
    """One inner op changed or one edge flipped, with equal chance, on the cell padded to 7 vertices (new inner
    vertices get random ops and no edges, so a flipped edge can grow the cell). The result is the raw mutated
    cell: it may be invalid (e.g. over 9 edges) or prune to the parent, and callers draw again then, as the
    benchmark's REA does.
    """
    _require_valid(cell)
    cell = prune(cell)
    n = cell.num_vertices
    adj = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.uint8)
    slot = list(range(n - 1)) + [MAX_VERTICES - 1]
    adj[np.ix_(slot, slot)] = cell.adjacency
    ops = [INPUT, *(OPS[i] for i in rng.integers(0, len(OPS), size=MAX_VERTICES - 2)), OUTPUT]
    for old, new in zip(range(n - 1), slot):
        ops[new] = cell.ops[old]
    if rng.random() < 0.5:
        v = int(rng.integers(1, MAX_VERTICES - 1))
        ops[v] = [op for op in OPS if op != ops[v]][int(rng.integers(len(OPS) - 1))]
    else:
        i, j = np.triu_indices(MAX_VERTICES, k=1)
        e = int(rng.integers(len(i)))
        adj[i[e], j[e]] ^= 1
    return Cell(adj, tuple(ops))


def to_graph(cell: Cell) -> GraphArrays:
    """Pad a valid cell to 7 vertices: pad vertices (no edges) go before the output, which stays last."""
    _require_valid(cell)
    cell = prune(cell)
    n = cell.num_vertices
    slot = list(range(n - 1)) + [MAX_VERTICES - 1]  # new position of each vertex
    adj = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.uint8)
    adj[np.ix_(slot, slot)] = cell.adjacency
    ops = np.full(MAX_VERTICES, OP_VOCAB.index(PAD), dtype=np.int64)
    ops[slot] = [OP_VOCAB.index(op) for op in cell.ops]
    return GraphArrays(adj, ops)


def from_graph(adjacency: np.ndarray, ops: Sequence[int]) -> Cell:
    """The raw cell of a (decoded) fixed-size graph; pad vertices stay and are pruned if unconnected.

    A connected `pad` vertex, a lower-triangular edge or a missing path makes the cell invalid, never silently
    repaired: the validity metric must see what the decoder produced.
    """
    return Cell(np.asarray(adjacency), tuple(OP_VOCAB[int(i)] for i in ops))


# --- enumeration -------------------------------------------------------------------------------------------


def _full_dags(n: int) -> list[np.ndarray]:
    """All n-vertex upper-triangular DAGs with at most 9 edges in which every vertex lies on an
    input -> output path (every non-output vertex has an out-edge, every non-input vertex an in-edge).
    Any other graph prunes down to one of these with fewer vertices."""
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    masks = np.arange(1 << len(pairs), dtype=np.int64)
    bits = ((masks[:, None] >> np.arange(len(pairs))) & 1).astype(np.uint8)
    adj = np.zeros((len(masks), n, n), dtype=np.uint8)
    for k, (i, j) in enumerate(pairs):
        adj[:, i, j] = bits[:, k]
    full = (adj.sum(axis=2)[:, :-1] > 0).all(axis=1) & (adj.sum(axis=1)[:, 1:] > 0).all(axis=1)
    full &= bits.sum(axis=1) <= MAX_EDGES
    return list(adj[full])


def _isomorphism_classes(dags: np.ndarray) -> list[tuple[np.ndarray, list[tuple[int, ...]]]]:
    """Group same-size full DAGs up to isomorphism; return one representative per class with its
    automorphisms (as permutations of the inner vertices).

    Input and output are the unique source and sink of a full DAG, so every isomorphism fixes them and
    permutes only the inner vertices; every upper-triangular image of a DAG is again in `dags`, so the
    smallest packed image is a canonical key.
    """
    n = dags.shape[1]
    perms = [[0, *p, n - 1] for p in itertools.permutations(range(1, n - 1))]
    weights = np.left_shift(np.uint64(1), np.arange(n * n, dtype=np.uint64)).reshape(n, n)
    keys = np.full(len(dags), np.iinfo(np.uint64).max, dtype=np.uint64)
    lower = np.tril(np.ones((n, n), dtype=bool))
    for p in perms:
        image = dags[:, p][:, :, p]
        ok = ~(image & lower).any(axis=(1, 2))
        packed = (image.astype(np.uint64) * weights).sum(axis=(1, 2), dtype=np.uint64)
        keys = np.where(ok, np.minimum(keys, packed), keys)
    _, first = np.unique(keys, return_index=True)
    classes = []
    for k in np.sort(first):
        rep = dags[k]
        autos = [tuple(q - 1 for q in p[1:-1]) for p in perms if np.array_equal(rep[p][:, p], rep)]
        classes.append((rep, autos))
    return classes


def _distinct_labellings(n: int, automorphisms: list[tuple[int, ...]]) -> np.ndarray:
    """Inner-op labellings of an n-vertex DAG, one per orbit of its automorphism group (the smallest)."""
    labels = np.array(list(itertools.product(range(len(OPS)), repeat=n - 2)), dtype=np.int64)
    labels = labels.reshape(len(OPS) ** (n - 2), n - 2)
    base = len(OPS) ** np.arange(n - 2)[::-1]
    code = labels @ base
    keep = np.ones(len(labels), dtype=bool)
    for sigma in automorphisms:
        keep &= code <= labels[:, list(sigma)] @ base
    return labels[keep]


def _hash_class(item: tuple[np.ndarray, np.ndarray]) -> list[str]:
    """Module hashes of the given inner-op labellings of one DAG (the unit of parallel work)."""
    adj, labellings = item
    preds, succs = _adjacency_lists(adj)
    return [
        _module_hash([HASH_LABELS[INPUT], *(HASH_LABELS[OPS[i]] for i in inner), HASH_LABELS[OUTPUT]], preds, succs)
        for inner in labellings.tolist()
    ]


def build_enumeration(processes: int | None = None, progress=None) -> Enumeration:
    """Every unique NAS-Bench-101 cell, one representative per module hash, in a deterministic order.

    Enumerates the full DAGs of 2..7 vertices up to isomorphism, the op labellings of each up to its
    automorphisms, and hashes each labelled class once (about 424k md5 hashes instead of the 1.29M labelled
    graphs), across `processes` worker processes (default: all cores). Cells whose hashes coincide are kept
    once, as the benchmark does. `progress(done, total)` is called as work completes.
    """
    import os

    work = []
    for n in range(2, MAX_VERTICES + 1):
        for rep, autos in _isomorphism_classes(np.stack(_full_dags(n))):
            work.append((rep, _distinct_labellings(n, autos)))
    total = sum(len(labellings) for _, labellings in work)
    processes = processes or os.cpu_count() or 1
    first: dict[str, tuple[np.ndarray, list[int]]] = {}
    done = 0

    def consume(item: tuple[np.ndarray, np.ndarray], digests: list[str]) -> None:
        nonlocal done
        for digest, inner in zip(digests, item[1].tolist()):
            first.setdefault(digest, (item[0], inner))
        done += len(digests)
        if progress is not None:
            progress(done, total)

    if processes == 1:
        for item in work:
            consume(item, _hash_class(item))
    else:
        with worker_pool(processes) as pool:
            for item, digests in zip(work, pool.imap(_hash_class, work, chunksize=16)):
                consume(item, digests)

    size = len(first)
    num_vertices = np.empty(size, dtype=np.uint8)
    edges = np.zeros((size, (MAX_VERTICES * MAX_VERTICES + 7) // 8), dtype=np.uint8)
    ops = np.full((size, MAX_VERTICES), OP_VOCAB.index(PAD), dtype=np.uint8)
    hashes = np.empty((size, 16), dtype=np.uint8)
    for k, (digest, (adj, inner)) in enumerate(first.items()):
        n = adj.shape[0]
        num_vertices[k] = n
        edges[k] = Enumeration.pack_edges(adj, MAX_VERTICES)
        ops[k, :n] = [OP_VOCAB.index(INPUT), *(OP_VOCAB.index(OPS[i]) for i in inner), OP_VOCAB.index(OUTPUT)]
        hashes[k] = np.frombuffer(bytes.fromhex(digest), dtype=np.uint8)
    return Enumeration(NAME, OP_VOCAB, num_vertices, edges, ops, hashes)
