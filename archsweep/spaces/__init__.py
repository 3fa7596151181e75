"""Search spaces: pure Python + numpy (no torch, no ray), exact to each benchmark's own rules.

>>> space = get_space("nasbench201")
>>> cell = space.from_arch_str("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
>>> space.is_valid(cell), len(space.canonical_hash(cell))
(True, 32)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Protocol, runtime_checkable

import numpy as np

from archsweep.errors import ArchsweepError, UnknownNameError
from archsweep.settings import cache_dir as resolve_cache
from archsweep.spaces import darts, nasbench101, nasbench201
from archsweep.spaces.cell import Cell, GraphArrays
from archsweep.spaces.enumeration import Enumeration, cached

__all__ = ["SPACES", "Cell", "Enumeration", "GraphArrays", "SearchSpace", "get_space", "training_cells"]


@runtime_checkable
class SearchSpace(Protocol):
    name: str
    op_vocab: tuple[str, ...]
    max_vertices: int
    num_cells: int
    enumerable: bool  # False: too large; `dataset` samples the cells the models train on
    default_latent: str  # vqvae.latent when "auto"
    default_seq_len: int  # codes per cell when vqvae.seq_len is "auto" (and the latent pooled)
    default_edge_weight: float  # the reconstruction loss's edge weight when vqvae.edge_weight is "auto"
    default_codebook_size: int  # K when vqvae.codebook_size is "auto"
    default_gin_layers: int  # vqvae.gin_layers when "auto"
    default_gin_direction: str  # vqvae.gin_direction when "auto"

    def cell(self, adjacency, ops: Sequence[str]) -> Cell: ...
    def why_invalid(self, cell: Cell) -> str | None: ...
    def is_valid(self, cell: Cell) -> bool: ...
    def prune(self, cell: Cell) -> Cell | None: ...
    def canonical_hash(self, cell: Cell) -> str: ...
    def enumerate(self, cache_dir: str | os.PathLike | None = None, progress=None) -> Enumeration: ...
    def dataset(self, size: int, seed: int, cache_dir: str | os.PathLike | None = None, progress=None) -> Enumeration: ...
    def random_cell(self, rng: np.random.Generator) -> Cell: ...
    def mutate(self, cell: Cell, rng: np.random.Generator) -> Cell: ...
    def to_graph(self, cell: Cell) -> GraphArrays: ...
    def from_graph(self, adjacency: np.ndarray, ops: Sequence[int]) -> Cell: ...
    def graph_arrays(self, enum: Enumeration) -> tuple[np.ndarray, np.ndarray]: ...


CELL_CACHE = 1 << 16  # distinct cells whose validity and canonical hash a space remembers (tens of MB at most)


def _remember(memo: dict, key, value):
    if len(memo) >= CELL_CACHE:
        memo.clear()
    memo[key] = value
    return value


class _ModuleSpace:
    """A `SearchSpace` over one module of pure functions; adds the cached enumeration."""

    def __init__(self, module: ModuleType, max_vertices: int, build: Callable[..., Enumeration] | None,
                 sample: Callable[..., Enumeration] | None = None):
        self._m = module
        self._build, self._sample = build, sample
        self.enumerable = build is not None
        self.default_latent: str = getattr(module, "DEFAULT_LATENT", "pooled")
        self.default_seq_len: int = getattr(module, "DEFAULT_SEQ_LEN", 8)
        self.default_edge_weight: float = getattr(module, "DEFAULT_EDGE_WEIGHT", 1.0)
        self.default_codebook_size: int = getattr(module, "DEFAULT_CODEBOOK_SIZE", 64)
        self.default_gin_layers: int = getattr(module, "DEFAULT_GIN_LAYERS", 4)
        self.default_gin_direction: str = getattr(module, "DEFAULT_GIN_DIRECTION", "undirected")
        self.name: str = module.NAME
        self.op_vocab: tuple[str, ...] = module.OP_VOCAB
        self.ops: tuple[str, ...] = module.OPS
        self.max_vertices = max_vertices
        self.num_cells: int = module.NUM_CELLS
        self.why_invalid = module.why_invalid
        self.prune = module.prune
        self.random_cell = module.random_cell
        self.mutate = module.mutate
        self.to_graph = module.to_graph
        self.from_graph = module.from_graph

        # memoised per distinct cell: generated samples repeat, and scoring asks a cell's validity and hash for
        # each metric and each dataset of the benchmark
        self._valid: dict[Cell, bool] = {}
        self._hash: dict[Cell, str] = {}

    def is_valid(self, cell: Cell) -> bool:
        known = self._valid.get(cell)
        if known is None:
            known = _remember(self._valid, cell, self._m.is_valid(cell))
        return known

    def canonical_hash(self, cell: Cell) -> str:
        known = self._hash.get(cell)
        if known is None:
            known = _remember(self._hash, cell, self._m.canonical_hash(cell))
        return known

    def remember(self, cell: Cell, canonical_hash: str) -> None:
        """Record a cell known to be valid with this hash (e.g. found among the enumerated cells)."""
        _remember(self._valid, cell, True)
        _remember(self._hash, cell, canonical_hash)

    def __getattr__(self, attr: str):  # space-specific helpers, e.g. from_arch_str for NAS-Bench-201
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self._m, attr)

    def __repr__(self) -> str:
        return f"<search space {self.name}>"

    def cell(self, adjacency, ops: Sequence[str]) -> Cell:
        return Cell(adjacency, tuple(ops))

    def graph_arrays(self, enum: Enumeration) -> tuple[np.ndarray, np.ndarray]:
        """`to_graph` of every enumerated cell at once: ops [N, max_vertices], adjacency [N, V, V]."""
        pad = self.op_vocab.index("pad") if "pad" in self.op_vocab else -1
        return enum.graph_arrays(self.max_vertices, pad)

    def enumerate(self, cache_dir: str | os.PathLike | None = None, progress=None) -> Enumeration:
        """All of the benchmark's cells, built once (`progress(done, total)` while building) and then loaded
        from the cache directory."""
        if self._build is None:
            raise ArchsweepError(f"the {self.name} space has {self.num_cells:.3g} cells, too many to enumerate; its "
                                 f"models train on a sampled set (space.dataset(size, seed); train.dataset_size)")
        path = resolve_cache(cache_dir) / f"{self.name}-cells.npz"
        return cached(path, lambda: self._build(progress=progress), expected_size=self.num_cells)

    def dataset(self, size: int, seed: int, cache_dir: str | os.PathLike | None = None, progress=None) -> Enumeration:
        """`size` cells sampled uniformly (distinct up to isomorphism) with `seed`, built once and then loaded
        from the cache directory: the training set of a space too large to enumerate. An enumerable space's
        dataset is its enumeration."""
        if self._sample is None:
            return self.enumerate(cache_dir, progress)
        path = resolve_cache(cache_dir) / f"{self.name}-sample-{size}-seed{seed}.npz"
        return cached(path, lambda: self._sample(size, seed, progress=progress), expected_size=size)


SPACES: dict[str, Callable[[], SearchSpace]] = {
    nasbench101.NAME: lambda: _ModuleSpace(nasbench101, nasbench101.MAX_VERTICES, nasbench101.build_enumeration),
    nasbench201.NAME: lambda: _ModuleSpace(nasbench201, nasbench201.NUM_VERTICES, nasbench201.build_enumeration),
    darts.NAME: lambda: _ModuleSpace(darts, darts.NUM_VERTICES, None, darts.sample_dataset),
}


@functools.cache
def get_space(name: str) -> SearchSpace:
    """The space of that name, one instance per process (its memoised checks shared by every caller)."""
    try:
        return SPACES[name]()
    except KeyError:
        raise UnknownNameError("search space", name, SPACES) from None


def training_cells(cfg, progress=None) -> Enumeration:
    """The cells a run's models train and are measured on (split by `train.train_fraction`): the whole space
    where it enumerates, otherwise `train.dataset_size` cells sampled with `train.dataset_seed`."""
    space = get_space(cfg.space)
    if space.enumerable:
        return space.enumerate(progress=progress)
    return space.dataset(cfg.train.dataset_size, cfg.train.dataset_seed, progress=progress)
