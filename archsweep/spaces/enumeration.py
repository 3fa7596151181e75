"""All cells of a space in a compact, array-backed form, with an atomic on-disk cache."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from archsweep.spaces.cell import Cell

log = logging.getLogger(__name__)

STRIDE = 8  # edge i -> j is bit STRIDE * i + j of a uint64, so up to 8 vertices fit
CACHE_FORMAT = 1


@dataclass(frozen=True, eq=False)
class Enumeration:
    """Cell k has `num_vertices[k]` vertices, edges `edge_bits[k]`, ops `op_vocab[ops[k, :n]]` and canonical
    hash `hashes[k]` (16 raw md5 bytes). About 30 bytes a cell: NAS-Bench-101's 423,624 cells take 13 MB."""

    space: str
    op_vocab: tuple[str, ...]
    num_vertices: np.ndarray  # uint8 [N]
    edge_bits: np.ndarray  # uint64 [N]
    ops: np.ndarray  # uint8 [N, max_vertices]
    hashes: np.ndarray  # uint8 [N, 16]

    def __len__(self) -> int:
        return len(self.num_vertices)

    @staticmethod
    def pack_edges(adjacency: np.ndarray) -> int:
        rows, cols = np.nonzero(adjacency)
        return int(np.bitwise_or.reduce(np.left_shift(np.uint64(1), (rows * STRIDE + cols).astype(np.uint64)),
                                        initial=np.uint64(0)))

    def adjacency(self, k: int) -> np.ndarray:
        n = int(self.num_vertices[k])
        bits = (np.uint64(self.edge_bits[k]) >> np.arange(STRIDE * STRIDE, dtype=np.uint64)) & np.uint64(1)
        return bits.reshape(STRIDE, STRIDE)[:n, :n].astype(np.uint8)

    def cell(self, k: int) -> Cell:
        n = int(self.num_vertices[k])
        return Cell(self.adjacency(k), tuple(self.op_vocab[i] for i in self.ops[k, :n]))

    def hash(self, k: int) -> str:
        return self.hashes[k].tobytes().hex()

    @cached_property
    def hex_hashes(self) -> list[str]:
        return [h.hex() for h in map(bytes, self.hashes)]

    @cached_property
    def index(self) -> dict[str, int]:
        """Canonical hash -> position of its first cell."""
        index: dict[str, int] = {}
        for k, h in enumerate(self.hex_hashes):
            index.setdefault(h, k)
        return index

    def graph_arrays(self, max_vertices: int, pad_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Every cell in the fixed-size graph form, vectorised: ops [N, V] (int64) and adjacency [N, V, V]
        (uint8). A cell of n < V vertices keeps vertices 0..n-2 in place, moves its output to V-1 and pads
        between with `pad_index` vertices without edges (the layout of each space's `to_graph`)."""
        count = len(self)
        bits = (self.edge_bits[:, None] >> np.arange(STRIDE * STRIDE, dtype=np.uint64)) & np.uint64(1)
        raw = bits.astype(np.uint8).reshape(count, STRIDE, STRIDE)
        ops = np.full((count, max_vertices), pad_index, dtype=np.int64)
        adj = np.zeros((count, max_vertices, max_vertices), dtype=np.uint8)
        for n in np.unique(self.num_vertices):
            n = int(n)
            rows = np.flatnonzero(self.num_vertices == n)
            slot = [*range(n - 1), max_vertices - 1]
            ops[np.ix_(rows, slot)] = self.ops[rows, :n]
            adj[np.ix_(rows, slot, slot)] = raw[rows, :n, :n]
        return ops, adj

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename), so concurrent builders never leave a torn cache."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, format=np.array(CACHE_FORMAT), space=np.array(self.space),
                         op_vocab=np.array(self.op_vocab), num_vertices=self.num_vertices,
                         edge_bits=self.edge_bits, ops=self.ops, hashes=self.hashes)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: Path) -> Enumeration:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != CACHE_FORMAT:
                raise ValueError(f"cache format {int(z['format'])}, expected {CACHE_FORMAT}")
            out = cls(str(z["space"]), tuple(str(s) for s in z["op_vocab"]), z["num_vertices"], z["edge_bits"],
                      z["ops"], z["hashes"])
        n = len(out.num_vertices)
        if not (len(out.edge_bits) == len(out.ops) == len(out.hashes) == n) or out.hashes.shape[1:] != (16,):
            raise ValueError("inconsistent array lengths")
        return out


def cached(path: Path, build: Callable[[], Enumeration], expected_size: int | None = None) -> Enumeration:
    """Load `path` if it holds a sound enumeration of the expected size; otherwise build it and save it."""
    if path.exists():
        try:
            enum = Enumeration.load(path)
            if expected_size is None or len(enum) == expected_size:
                return enum
            log.warning("cache %s has %d cells, expected %d; rebuilding", path, len(enum), expected_size)
        except Exception as exc:  # a torn or foreign file is rebuilt, never trusted
            log.warning("cache %s is unreadable (%s); rebuilding", path, exc)
    enum = build()
    if expected_size is not None and len(enum) != expected_size:
        raise RuntimeError(f"{enum.space} enumeration gave {len(enum)} cells, expected {expected_size}")
    enum.save(path)
    return enum


def graph_keys(ops: np.ndarray, adj: np.ndarray, num_ops: int) -> np.ndarray:
    """One int64 per graph in the fixed-size form (ops [N, V], adjacency [N, V, V], read above the diagonal):
    the op of each vertex and each edge bit packed, so equal keys are equal graphs, vertex order included."""
    vertices = ops.shape[1]
    op_bits = max(1, (num_ops - 1).bit_length())
    rows, cols = np.triu_indices(vertices, 1)
    if vertices * op_bits + len(rows) > 63:
        raise ValueError(f"{vertices} vertices of {num_ops} ops do not pack into 63 bits")
    key = np.zeros(len(ops), dtype=np.int64)
    for v in range(vertices):
        key = (key << op_bits) | ops[:, v].astype(np.int64)
    edges = adj[:, rows, cols].astype(np.int64)
    for e in range(len(rows)):
        key = (key << 1) | edges[:, e]
    return key


class GraphIndex:
    """Finds many graphs among a space's enumerated cells at once (sorted keys, binary search): scoring a
    decoded sample that is exactly an enumerated cell's graph form costs a lookup instead of a validity check
    and a canonical hash."""

    def __init__(self, ops: np.ndarray, adj: np.ndarray, num_ops: int, hash_of: Callable[[int], str] | None = None):
        """`hash_of(position)`: the canonical hash of an enumerated cell (`Enumeration.hash`)."""
        keys = graph_keys(ops, adj, num_ops)
        self.num_ops, self.hash_of = num_ops, hash_of
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]

    def find(self, ops: np.ndarray, adj: np.ndarray) -> np.ndarray:
        """The enumeration position of each graph, -1 where it is not an enumerated cell's graph form."""
        query = graph_keys(ops, adj, self.num_ops)
        at = np.searchsorted(self.keys, query).clip(max=len(self.keys) - 1)
        return np.where(self.keys[at] == query, self.order[at], -1)
