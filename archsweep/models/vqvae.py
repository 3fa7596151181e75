"""Graph VQ-VAE and its continuous VAE baseline: one GIN encoder, one decoder, two latent bottlenecks.

Cells come in the fixed-size graph form of their space (`ops` [B, V] indices, `adj` [B, V, V]). The encoder is a
GIN (torch-geometric's dense GINConv) over both edge directions, with the op and the vertex position one-hot as
node features (the position tells the decoder which of the isomorphic orders to write back). Its node embeddings
become L latent vectors, either one per vertex (`per_node`, L = V) or by L learned queries attending over the
vertices (`pooled`, any L). The decoder maps the L vectors to op logits per vertex and edge logits for the upper
triangle, so every decoded cell is a DAG in topological order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import DenseGINConv

from archsweep.config import VQVAEConfig
from archsweep.models.quantizer import VectorQuantizer


@dataclass
class Output:
    op_logits: torch.Tensor  # [B, V, num_ops]
    adj_logits: torch.Tensor  # [B, V, V], meaningful above the diagonal only
    loss: torch.Tensor  # total training loss
    recon_loss: torch.Tensor
    latent_loss: torch.Tensor  # VQ commitment/codebook, or KL
    codes: torch.Tensor | None  # [B, L] for the VQ-VAE


def _mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class GINEncoder(nn.Module):
    def __init__(self, num_ops: int, num_vertices: int, hidden: int, layers: int, direction: str = "undirected"):
        super().__init__()
        self.num_ops, self.num_vertices, self.direction = num_ops, num_vertices, direction
        self.embed = nn.Linear(num_ops + num_vertices, hidden)
        self.convs = nn.ModuleList(DenseGINConv(_mlp([hidden, hidden, hidden]), train_eps=True) for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))

    def forward(self, ops: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Node embeddings [B, V, hidden]."""
        batch = ops.shape[0]
        position = torch.eye(self.num_vertices, device=ops.device).expand(batch, -1, -1)
        h = self.embed(torch.cat([F.one_hot(ops, self.num_ops).float(), position], dim=-1))
        # a dense GIN layer sums h_j over adj[i, j] = 1; adj[u, v] = 1 is the edge u -> v, so the transpose is a
        # vertex's inputs
        heard = adj.transpose(1, 2) if self.direction == "forward" else adj + adj.transpose(1, 2)
        for conv, norm in zip(self.convs, self.norms):
            h = norm(h + F.relu(conv(h, heard)))
        return h


class LatentHead(nn.Module):
    """Node embeddings -> L vectors of `out_dim`: one per vertex, or L learned queries attending over vertices."""

    def __init__(self, mode: str, hidden: int, seq_len: int, out_dim: int, normalize: bool = False):
        super().__init__()
        self.mode = mode
        if mode == "pooled":
            self.queries = nn.Parameter(torch.randn(seq_len, hidden) / hidden**0.5)
            self.attention = nn.MultiheadAttention(hidden, num_heads=4, batch_first=True)
        self.out = _mlp([hidden, hidden, out_dim])
        # unit-scale latents keep distinct cells apart from the first step, so the codebook does not collapse
        self.norm = nn.LayerNorm(out_dim, elementwise_affine=False) if normalize else nn.Identity()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.mode == "pooled":
            h, _ = self.attention(self.queries.expand(h.shape[0], -1, -1), h, h, need_weights=False)
        return self.norm(self.out(h))


class Decoder(nn.Module):
    def __init__(self, seq_len: int, code_dim: int, hidden: int, num_vertices: int, num_ops: int):
        super().__init__()
        self.num_vertices, self.num_ops = num_vertices, num_ops
        self.net = _mlp([seq_len * code_dim, hidden, hidden, num_vertices * num_ops + num_vertices * num_vertices])

    @torch.no_grad()
    def start_at_marginals(self, ops: torch.Tensor, adj: torch.Tensor, eps: float = 1e-4) -> None:
        """Set the output bias to the training cells' per-vertex op log-frequencies and per-entry edge logits, so
        training starts at the loss of the marginals. Measured on darts (per-vertex codes, K = 256, a plain loop):
        from the default bias no held-out cell had every operation right after 750 steps; from the marginals every
        held-out cell was exact by then."""
        v, o = self.num_vertices, self.num_ops
        op_counts = torch.stack([torch.bincount(ops[:, i], minlength=o) for i in range(v)]).float()
        p_op = (op_counts / len(ops)).clamp_min(eps)
        p_edge = (adj.sum(0, dtype=torch.float32) / len(adj)).clamp(eps, 1 - eps)
        self.net[-1].bias.copy_(torch.cat([p_op.log().flatten(), torch.logit(p_edge).flatten()]))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(z.flatten(1))
        v, o = self.num_vertices, self.num_ops
        return out[:, : v * o].view(-1, v, o), out[:, v * o:].view(-1, v, v)


def reconstruction_loss(op_logits, adj_logits, ops, adj, edge_weight: float = 1.0) -> torch.Tensor:
    """Cross-entropy of the ops plus `edge_weight` x binary cross-entropy of the upper-triangular edges (both means
    over entries)."""
    v = ops.shape[1]
    upper = torch.triu(torch.ones(v, v, dtype=torch.bool, device=ops.device), diagonal=1)
    op_loss = F.cross_entropy(op_logits.reshape(-1, op_logits.shape[-1]), ops.reshape(-1))
    edge_loss = F.binary_cross_entropy_with_logits(adj_logits[:, upper], adj[:, upper].float())
    return op_loss + edge_weight * edge_loss


def decode_graph(op_logits: torch.Tensor, adj_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely cell: argmax op per vertex, edges above the diagonal with probability > 1/2."""
    v = op_logits.shape[1]
    upper = torch.triu(torch.ones(v, v, dtype=torch.bool, device=op_logits.device), diagonal=1)
    return op_logits.argmax(-1), ((adj_logits > 0) & upper).to(torch.uint8)


class GraphVQVAE(nn.Module):
    def __init__(self, cfg: VQVAEConfig, num_ops: int, num_vertices: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = GINEncoder(num_ops, num_vertices, cfg.hidden_dim, cfg.gin_layers, cfg.gin_direction)
        self.head = LatentHead(cfg.latent, cfg.hidden_dim, cfg.seq_len, cfg.code_dim, normalize=True)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.beta, cfg.ema, cfg.ema_decay,
                                         cfg.dead_code_restart)
        self.decoder = Decoder(cfg.seq_len, cfg.code_dim, cfg.decoder_hidden, num_vertices, num_ops)

    def forward(self, ops: torch.Tensor, adj: torch.Tensor) -> Output:
        q = self.quantizer(self.head(self.encoder(ops, adj.float())))
        op_logits, adj_logits = self.decoder(q.z_q)
        recon = reconstruction_loss(op_logits, adj_logits, ops, adj, self.cfg.edge_weight)
        return Output(op_logits, adj_logits, recon + q.loss, recon, q.loss, q.codes)

    @torch.no_grad()
    def encode(self, ops: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Code sequences [B, L]."""
        return self.quantizer.nearest(self.head(self.encoder(ops, adj.float())))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Code sequences [B, L] -> (ops [B, V], adjacency [B, V, V])."""
        return decode_graph(*self.decoder(self.quantizer.lookup(codes)))


class GraphVAE(nn.Module):
    """The continuous baseline (arch2vec-style): a Gaussian latent of L x code_dim, same encoder and decoder."""

    def __init__(self, cfg: VQVAEConfig, num_ops: int, num_vertices: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = GINEncoder(num_ops, num_vertices, cfg.hidden_dim, cfg.gin_layers, cfg.gin_direction)
        self.head = LatentHead(cfg.latent, cfg.hidden_dim, cfg.seq_len, 2 * cfg.code_dim)
        self.decoder = Decoder(cfg.seq_len, cfg.code_dim, cfg.decoder_hidden, num_vertices, num_ops)
        self.norm = nn.LayerNorm(cfg.code_dim, elementwise_affine=False)  # as the VQ-VAE's latents

    def _posterior(self, ops: torch.Tensor, adj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.encoder(ops, adj.float())).chunk(2, dim=-1)
        return self.norm(mu), logvar

    def forward(self, ops: torch.Tensor, adj: torch.Tensor) -> Output:
        mu, logvar = self._posterior(ops, adj)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        op_logits, adj_logits = self.decoder(z)
        recon = reconstruction_loss(op_logits, adj_logits, ops, adj, self.cfg.edge_weight)
        kl = -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())
        return Output(op_logits, adj_logits, recon + self.cfg.kl_weight * kl, recon, kl, None)

    @torch.no_grad()
    def encode(self, ops: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Latent means [B, L, code_dim]."""
        return self._posterior(ops, adj)[0]

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_graph(*self.decoder(z))


def start_training(model: nn.Module, ops: torch.Tensor, adj: torch.Tensor) -> None:
    """What a fresh model does before its first step, given its training cells. Per-vertex latents start the
    decoder at the marginals (`Decoder.start_at_marginals`); pooled latents keep the default bias, which is what
    their NAS-Bench figures were measured with (the marginals are not yet measured on them)."""
    if model.cfg.latent == "per_node":
        model.decoder.start_at_marginals(ops, adj)


def build_model(cfg: VQVAEConfig, num_ops: int, num_vertices: int) -> nn.Module:
    return (GraphVQVAE if cfg.model == "vqvae" else GraphVAE)(cfg, num_ops, num_vertices)
