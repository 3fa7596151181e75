"""Cells <-> codes through a trained VQ-VAE: the one place cells become code sequences (or VAE latents) and code
sequences become cells again, used by the stages, the generator and the search encoders alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from archsweep.spaces import Cell


def graph_arrays(space, cells: Sequence[Cell]) -> tuple[np.ndarray, np.ndarray]:
    """(ops [N, V] int, adjacency [N, V, V] uint8) of the cells' graph forms."""
    graphs = [space.to_graph(c) for c in cells]
    return np.stack([g.ops for g in graphs]), np.stack([g.adjacency for g in graphs])


@torch.no_grad()
def encode_graphs(model, ops, adj, batch: int = 8192) -> torch.Tensor:
    """The model's codes [N, L] (VQ-VAE) or latent means [N, L, D] (VAE) of graph arrays, in batches."""
    ops = torch.as_tensor(np.asarray(ops, dtype=np.int64)) if not torch.is_tensor(ops) else ops
    adj = torch.as_tensor(np.asarray(adj)) if not torch.is_tensor(adj) else adj
    return torch.cat([model.encode(o, a) for o, a in zip(ops.split(batch), adj.split(batch))])


def encode_cells(model, space, cells: Sequence[Cell]) -> torch.Tensor:
    """`encode_graphs` of cells."""
    return encode_graphs(model, *graph_arrays(space, cells))


@torch.no_grad()
def decode_arrays(model, latents: torch.Tensor, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The graph form (ops [N, V], adjacency [N, V, V]) the model decodes code sequences [N, L] or VAE latents
    [N, L, D] to."""
    ops, adj = zip(*(model.decode(chunk) for chunk in latents.split(batch)))
    return torch.cat(ops).numpy(), torch.cat(adj).numpy()


def decode_cells(space, model, latents: torch.Tensor, batch: int = 4096) -> list[Cell]:
    """Cells (as decoded, possibly invalid) of code sequences [N, L] or VAE latents [N, L, D]."""
    ops, adj = decode_arrays(model, latents, batch)
    return [space.from_graph(a, o) for o, a in zip(ops, adj)]


def generated_cells(codes: list[tuple[int, ...] | None], vqvae_model, space, index=None) -> list[Cell | None]:
    """Decode parsed code sequences through the VQ-VAE; None (unparseable) stays None. Each distinct sequence is
    decoded once and its samples share one Cell. A space that checks and hashes many graphs at once
    (`graph_hashes`, DARTS) does so for all of them; otherwise, with `index` (a `GraphIndex` of the space's
    enumeration), the decoded graphs that are enumerated cells are found all at once. Either way the space remembers
    the valid ones with their hashes, so scoring checks and hashes only the others, one by one."""
    parsed = [c for c in codes if c is not None]
    if not parsed:  # nothing parsed: every sample is invalid
        return [None] * len(codes)
    distinct, inverse = np.unique(np.asarray(parsed, dtype=np.int64), axis=0, return_inverse=True)
    ops, adj = decode_arrays(vqvae_model, torch.from_numpy(distinct))
    cells = [space.from_graph(a, o) for o, a in zip(ops, adj)]
    if hasattr(space, "graph_hashes"):
        for cell, h in zip(cells, space.graph_hashes(ops, adj)):
            if h is not None:
                space.remember(cell, h)
    elif index is not None:
        for cell, k in zip(cells, index.find(ops, adj).tolist()):
            if k >= 0:
                space.remember(cell, index.hash_of(k))
    decoded = iter(inverse.reshape(-1).tolist())
    return [None if c is None else cells[next(decoded)] for c in codes]
