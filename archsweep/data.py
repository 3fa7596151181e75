"""A run's training data in the form the models read: its cells as graph tensors with the seeded train/held-out
split, and the training split's reference sets that novelty is measured against."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from archsweep.config import Config
from archsweep.spaces import get_space, training_cells


def load_cells(cfg: Config) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The run's cells (`archsweep.spaces.training_cells`) in graph form, and the seeded train mask
    (`train_fraction` of them)."""
    ops, adj = get_space(cfg.space).graph_arrays(training_cells(cfg))
    order = np.random.default_rng(cfg.seed).permutation(len(ops))
    train = np.zeros(len(ops), dtype=bool)
    train[order[: int(round(cfg.train.train_fraction * len(ops)))]] = True
    return torch.from_numpy(ops), torch.from_numpy(adj), train


def reference(space, enum, ops: torch.Tensor, adj: torch.Tensor, train: np.ndarray) -> tuple[set[str], set[str]]:
    """(canonical hashes, exact strings) of the cells under the `train` mask."""
    index = np.flatnonzero(train)
    return ({enum.hash(int(i)) for i in index},
            {space.from_graph(adj[i].numpy(), ops[i].numpy()).to_string() for i in index})


@dataclass
class TrainingSplit:
    """A run's cells, their graph arrays and train mask, and the training split's reference sets."""

    enum: object  # archsweep.spaces.training_cells(cfg)
    ops: torch.Tensor
    adj: torch.Tensor
    train: np.ndarray
    hashes: set[str]  # canonical hashes of the training cells: what novelty is measured against
    strings: set[str]  # their exact strings

    @property
    def index(self) -> np.ndarray:
        """Positions of the training cells among the run's cells."""
        return np.flatnonzero(self.train)


def training_split(cfg: Config) -> TrainingSplit:
    enum = training_cells(cfg)
    ops, adj, train = load_cells(cfg)
    return TrainingSplit(enum, ops, adj, train, *reference(get_space(cfg.space), enum, ops, adj, train))
