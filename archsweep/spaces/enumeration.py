"""All cells of a space in a compact, array-backed form, with an atomic on-disk cache."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from archsweep.spaces.cell import Cell

log = logging.getLogger(__name__)

CACHE_FORMAT = 2


def _default_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def worker_pool(processes: int) -> mp.pool.Pool:
    """A process pool for hashing cells, safe inside a Ray worker (use it as `with worker_pool(n) as pool:`). Its
    workers are forked (cheap: no re-import) and would inherit the Ray worker's SIGTERM handler, under which the
    pool's exit (`Pool.terminate`) never ends them: a trial hung for 20 minutes there. So they take the default
    handler back."""
    return mp.get_context("fork" if os.name == "posix" else "spawn").Pool(processes, initializer=_default_sigterm)


@dataclass(frozen=True, eq=False)
class Enumeration:
    """A space's cells as arrays: cell k has `num_vertices[k]` vertices, ops `op_vocab[ops[k, :n]]`, edges
    `edges[k]` (its adjacency in a V x V frame, V = `ops.shape[1]`, as packed bits) and canonical hash
    `hashes[k]` (16 raw md5 bytes). Every cell of an enumerable space, or a sampled training set of one that
    is not. About 30 bytes a cell: NAS-Bench-101's 423,624 cells take 13 MB."""

    space: str
    op_vocab: tuple[str, ...]
    num_vertices: np.ndarray  # uint8 [N]
    edges: np.ndarray  # uint8 [N, ceil(V * V / 8)]: np.packbits of the V x V adjacency, row-major
    ops: np.ndarray  # uint8 [N, V]
    hashes: np.ndarray  # uint8 [N, 16]

    def __len__(self) -> int:
        return len(self.num_vertices)

    @property
    def frame(self) -> int:
        return self.ops.shape[1]

    @staticmethod
    def pack_edges(adjacency: np.ndarray, frame: int) -> np.ndarray:
        """One cell's adjacency (n <= frame vertices) as the packed row `edges` stores."""
        n = adjacency.shape[0]
        full = np.zeros((frame, frame), dtype=np.uint8)
        full[:n, :n] = adjacency
        return np.packbits(full.reshape(-1))

    def _unpacked(self, rows) -> np.ndarray:
        frame = self.frame
        bits = np.unpackbits(self.edges[rows], axis=-1, count=frame * frame)
        return bits.reshape(*bits.shape[:-1], frame, frame)

    @property
    def num_edges(self) -> np.ndarray:
        """Edges per cell."""
        return np.bitwise_count(self.edges).sum(axis=1)

    def adjacency(self, k: int) -> np.ndarray:
        n = int(self.num_vertices[k])
        return self._unpacked(k)[:n, :n]

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
        raw = self._unpacked(slice(None))
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
                         edges=self.edges, ops=self.ops, hashes=self.hashes)
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
            out = cls(str(z["space"]), tuple(str(s) for s in z["op_vocab"]), z["num_vertices"], z["edges"],
                      z["ops"], z["hashes"])
        n = len(out.num_vertices)
        if not (len(out.edges) == len(out.ops) == len(out.hashes) == n) or out.hashes.shape[1:] != (16,):
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


def graph_keys(ops: np.ndarray, adj: np.ndarray) -> np.ndarray:
    """One fixed-length byte string per graph in the fixed-size form (ops [N, V], adjacency [N, V, V], read above
    the diagonal): each vertex's op and the packed edge bits, so equal keys are equal graphs, vertex order
    included."""
    rows, cols = np.triu_indices(ops.shape[1], 1)
    packed = np.concatenate([ops.astype(np.uint8), np.packbits(adj[:, rows, cols].astype(np.uint8), axis=1)], axis=1)
    return np.ascontiguousarray(packed).view(f"S{packed.shape[1]}").reshape(-1)


class GraphIndex:
    """Finds many graphs among a space's enumerated cells at once (sorted keys, binary search): scoring a
    decoded sample that is exactly an enumerated cell's graph form costs a lookup instead of a validity check
    and a canonical hash."""

    def __init__(self, ops: np.ndarray, adj: np.ndarray, hash_of: Callable[[int], str] | None = None):
        """`hash_of(position)`: the canonical hash of an enumerated cell (`Enumeration.hash`)."""
        keys = graph_keys(ops, adj)
        self.hash_of = hash_of
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]

    def find(self, ops: np.ndarray, adj: np.ndarray) -> np.ndarray:
        """The enumeration position of each graph, -1 where it is not an enumerated cell's graph form."""
        query = graph_keys(ops, adj)
        at = np.searchsorted(self.keys, query).clip(max=len(self.keys) - 1)
        return np.where(self.keys[at] == query, self.order[at], -1)
