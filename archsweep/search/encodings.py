"""Cells as fixed-length vectors, for the strategies and predictors that work in a representation space (bo, rl)
and for the representation-quality table.

- `adjacency`: the upper triangle of the graph's adjacency matrix and a one-hot of every vertex's operation: no
  training, the baseline every learned representation has to beat.
- `vq`: the VQ-VAE's quantized code vectors (the codebook entries of the cell's code sequence), L x code_dim.
- `vae`: the continuous VAE's posterior means, L x code_dim (arch2vec's representation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from archsweep.artifacts import load_model
from archsweep.decoding import encode_graphs, graph_arrays
from archsweep.errors import ArchsweepError
from archsweep.search.requirements import check_model_config, require_model_file
from archsweep.spaces import Cell

ENCODINGS = ("adjacency", "vq", "vae")


def adjacency_onehot(ops: np.ndarray, adj: np.ndarray, num_ops: int) -> np.ndarray:
    """[N, V(V-1)/2 + V * num_ops] float32: the strict upper triangle, then each vertex's operation one-hot."""
    n, v = ops.shape
    upper = adj[:, *np.triu_indices(v, 1)].astype(np.float32)
    onehot = np.eye(num_ops, dtype=np.float32)[ops].reshape(n, v * num_ops)
    return np.concatenate([upper, onehot], axis=1)


class Encoder:
    """`encoder(cells)` -> [N, D] float32 in one representation. `model_path`: a VQ-VAE stage's model.pt, of the
    matching model (vqvae.model=vqvae for `vq`, =vae for `vae`); unused for `adjacency`."""

    def __init__(self, space, encoding: str, model_path: str | Path | None = None, batch: int = 4096):
        if encoding not in ENCODINGS:
            raise ArchsweepError(f"unknown encoding {encoding!r}; choose one of {', '.join(ENCODINGS)}")
        self.space, self.encoding, self.batch, self.model = space, encoding, batch, None
        if encoding != "adjacency":
            require_model_file(model_path, encoding)
            self.model, cfg = load_model(model_path)
            check_model_config(model_path, encoding, space.name, cfg)

    def __call__(self, cells: Sequence[Cell]) -> np.ndarray:
        ops, adj = graph_arrays(self.space, cells)
        return self.arrays(ops, adj)

    def arrays(self, ops: np.ndarray, adj: np.ndarray) -> np.ndarray:
        """The same from graph arrays (as `space.graph_arrays` gives for a whole table)."""
        if self.model is None:
            return adjacency_onehot(ops, adj, len(self.space.op_vocab))
        if not len(ops):
            return np.zeros((0, 0), np.float32)
        z = encode_graphs(self.model, ops, adj, self.batch)
        if self.encoding == "vq":
            with torch.no_grad():
                z = self.model.quantizer.lookup(z)
        return z.reshape(len(ops), -1).float().numpy()


class CodeEncoder:
    """`encoder(cells)` -> [N, L] int: the VQ-VAE's code sequences (what the LM reads), from a VQ-VAE stage's
    model.pt; `codebook_size` and `seq_len` are that model's K and L."""

    def __init__(self, space, model_path: str | Path):
        require_model_file(model_path, "codes")
        self.space = space
        self.model, cfg = load_model(model_path)
        check_model_config(model_path, "codes", space.name, cfg)
        self.codebook_size, self.seq_len = cfg.vqvae.codebook_size, cfg.vqvae.seq_len

    def __call__(self, cells: Sequence[Cell]) -> np.ndarray:
        return encode_graphs(self.model, *graph_arrays(self.space, cells)).numpy()
