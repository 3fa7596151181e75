"""The cell type shared by all search spaces: a DAG with one operation label per vertex."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Cell:
    """A cell as given: `adjacency[i, j] == 1` is an edge i -> j; `ops[i]` labels vertex i.

    The arrays are stored read-only so that a cell can be hashed and shared safely. A `Cell` may be
    invalid; each space's `is_valid`/`why_invalid` decides.
    """

    adjacency: np.ndarray
    ops: tuple[str, ...]

    def __post_init__(self):
        adj = np.array(self.adjacency, dtype=np.uint8, copy=True)
        if adj.ndim != 2 or adj.shape[0] != adj.shape[1]:
            raise ValueError(f"adjacency must be a square matrix, got shape {adj.shape}")
        ops = tuple(str(op) for op in self.ops)
        if len(ops) != adj.shape[0]:
            raise ValueError(f"{len(ops)} ops for a {adj.shape[0]}-vertex adjacency matrix")
        adj.setflags(write=False)
        object.__setattr__(self, "adjacency", adj)
        object.__setattr__(self, "ops", ops)
        # computed once: cells key the spaces' memoised checks, which look each sample up several times
        object.__setattr__(self, "_key", (adj.shape[0], adj.tobytes(), ops))
        object.__setattr__(self, "_hash", hash(self._key))

    @property
    def num_vertices(self) -> int:
        return len(self.ops)

    @property
    def num_edges(self) -> int:
        return int(self.adjacency.sum())

    def __eq__(self, other: object) -> bool:
        """Exact (string) equality: same matrix, same ops, same vertex order. Not isomorphism."""
        if not isinstance(other, Cell):
            return NotImplemented
        return self is other or self._key == other._key

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Cell(adjacency={self.adjacency.tolist()}, ops={list(self.ops)})"

    def to_string(self) -> str:
        """Exact string form (adjacency rows + ops), the key of the string-based metric variants."""
        adj = self.adjacency
        if adj.max(initial=0) <= 9:  # one digit an entry (every cell a space builds): one C call, not V^2 str()s
            rows = (adj + ord("0")).tobytes().decode("ascii")
        else:
            rows = "".join("".join(map(str, row)) for row in adj.tolist())
        return f"{self.num_vertices}:{rows}:{','.join(self.ops)}"


@dataclass(frozen=True)
class GraphArrays:
    """Fixed-size graph form the encoder consumes: every cell of a space padded to `max_vertices`.

    `ops[i]` indexes the space's `op_vocab`; padded vertices carry the `pad` op and no edges.
    """

    adjacency: np.ndarray  # uint8 [max_vertices, max_vertices]
    ops: np.ndarray  # int64 [max_vertices]


def upper_triangular(adjacency: np.ndarray) -> bool:
    """True when all edges go from a lower to a higher vertex index (a DAG in topological order)."""
    return not np.tril(adjacency).any()
