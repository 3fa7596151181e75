"""Vector quantizer (van den Oord et al., 2017): nearest codebook entry, straight-through gradients.

Options that keep the codebook alive, the usual failure of VQ models: EMA codebook updates (instead of a
codebook loss) and dead-code restarts (codes unused for a while are re-seeded from current encoder outputs).
Under data parallelism the EMA statistics and the restart samples are summed/broadcast across workers, so every
replica keeps the same codebook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


@dataclass
class Quantized:
    z_q: torch.Tensor  # [B, L, D], straight-through: the value of the codes, the gradient of the input
    codes: torch.Tensor  # [B, L] int64
    loss: torch.Tensor  # commitment (+ codebook, without EMA) loss


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, ema: bool = True, decay: float = 0.99,
                 dead_code_restart: bool = True, restart_threshold: float = 1.0, eps: float = 1e-5):
        super().__init__()
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.dead_code_restart, self.restart_threshold = dead_code_restart, restart_threshold
        init = torch.randn(codebook_size, dim) / dim**0.5
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        # EMA of the assignments per step; starting at zero, the first step seeds every code from the data
        self.register_buffer("cluster_size", torch.zeros(codebook_size))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code indices [..., L] -> their vectors [..., L, D]."""
        return F.embedding(codes, self.codebook)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(-1, self.dim)
        distances = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
                     + self.codebook.pow(2).sum(1)[None, :])
        return distances.argmin(dim=1).view(z.shape[:-1])

    def forward(self, z: torch.Tensor) -> Quantized:
        codes = self.nearest(z)
        z_q = self.lookup(codes)
        if self.training:
            self._update(z.detach(), codes)
        loss = self.beta * F.mse_loss(z, z_q.detach())
        if not self.ema:
            loss = loss + F.mse_loss(z_q, z.detach())
        return Quantized(z + (z_q - z).detach(), codes, loss)

    @torch.no_grad()
    def _update(self, z: torch.Tensor, codes: torch.Tensor) -> None:
        flat, onehot = z.reshape(-1, self.dim), F.one_hot(codes.reshape(-1), self.codebook_size).type(z.dtype)
        counts, sums = onehot.sum(0), onehot.t() @ flat
        if _distributed():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
            self.codebook.copy_(self.embed_sum / smoothed[:, None])
        if self.dead_code_restart:
            self._restart_dead(flat)

    @torch.no_grad()
    def _restart_dead(self, flat: torch.Tensor) -> None:
        """Every step, without asking the host whether any code is dead (a sync that would stall a GPU): a
        candidate for every code is drawn and kept only where the code is dead."""
        dead = self.cluster_size < self.restart_threshold
        picks = flat[torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)]
        picks = picks + 0.01 * picks.std() * torch.randn_like(picks)  # distinct even if the batch repeats
        if _distributed():
            dist.broadcast(picks, src=0)
        self.codebook.copy_(torch.where(dead[:, None], picks, self.codebook))
        self.cluster_size.copy_(torch.where(dead, torch.full_like(self.cluster_size, self.restart_threshold),
                                            self.cluster_size))
        if self.ema:
            self.embed_sum.copy_(torch.where(dead[:, None], picks * self.restart_threshold, self.embed_sum))
