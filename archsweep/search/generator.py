"""The generator of LM-guided search: a trained VQ-VAE + LM prior, adapted to the best cells found so far and sampled.

Adaptation always starts from the prior's weights, so the generator's output depends only on its inputs (the elite
cells, the settings, the seed): a restarted search driver gets the same proposals, and several searches can share
one generator.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from archsweep.config import Config, from_dict
from archsweep.errors import ArchsweepError
from archsweep.spaces import Cell


def resolve_prior(path: str | Path) -> tuple[Config, Path, Path]:
    """(config, VQ-VAE stage dir, LM model dir) of a finished `archsweep run` directory or sweep trial directory."""
    root = Path(path)
    lm_stage = root / "lm"
    if not (lm_stage / "lm").is_dir() or not (lm_stage / "metrics.json").is_file():
        raise ArchsweepError(f"search.lm_guided.prior: {root} holds no finished LM stage (expected {lm_stage}/lm and "
                             f"{lm_stage}/metrics.json); give the directory of a finished `archsweep run` or of a "
                             "sweep trial with vqvae.model=vqvae")
    cfg = from_dict(json.loads((lm_stage / "metrics.json").read_text())["config"])
    vqvae_dir = root / "vqvae"
    if not (vqvae_dir / "model.pt").is_file() and (root / "metrics.json").is_file():  # a sweep trial: shared stage
        vqvae_dir = Path(json.loads((root / "metrics.json").read_text()).get("vqvae_dir", vqvae_dir))
    if not (vqvae_dir / "model.pt").is_file():
        raise ArchsweepError(f"search.lm_guided.prior: no VQ-VAE model for {root} (looked for {vqvae_dir}/model.pt)")
    return cfg, vqvae_dir, lm_stage / "lm"


class Generator:
    """Candidate cells from the prior: `candidates(elite, ...)` adapts the LM to the elite cells' codes, samples,
    decodes, and returns the distinct valid cells, most often sampled first."""

    def __init__(self, cfg: Config, vqvae_dir: str | Path, lm_dir: str | Path, device: str = "cpu"):
        import torch

        from archsweep.spaces import get_space
        from archsweep.stages.lm import load_lm
        from archsweep.stages.vqvae import load_model

        self.cfg = cfg
        self.space = get_space(self.cfg.space)
        self.vqvae, _ = load_model(Path(vqvae_dir) / "model.pt")
        self.lm = load_lm(self.cfg, lm_dir)
        self.device = torch.device(device)
        self.lm.model.to(self.device)
        self.prior = {k: v.detach().clone() for k, v in self.lm.model.state_dict().items()}
        self._adapted: tuple | None = None  # what the weights are adapted to now

    @classmethod
    def from_prior(cls, prior: str | Path, device: str = "cpu") -> Generator:
        """The generator of a finished `archsweep run` or sweep-trial directory."""
        return cls(*resolve_prior(prior), device)

    def encode(self, cells: list[Cell]) -> list[tuple[int, ...]]:
        import torch

        graphs = [self.space.to_graph(c) for c in cells]
        ops = torch.from_numpy(np.stack([g.ops for g in graphs]))
        adj = torch.from_numpy(np.stack([g.adjacency for g in graphs]))
        return [tuple(row) for row in self.vqvae.encode(ops, adj).tolist()]

    def adapt(self, elite: list[Cell], steps: int, lr: float, seed: int) -> float | None:
        """Start from the prior; fine-tune `steps` AdamW steps on the elite cells' codes. Returns the last loss."""
        import torch

        from archsweep.lm.sampling import collate

        key = (tuple(c.to_string() for c in elite), steps, lr, seed)
        if key == self._adapted:
            return None
        model = self.lm.model
        model.load_state_dict(self.prior)
        loss = None
        if elite and steps:
            torch.manual_seed(seed)
            batch = {k: v.to(self.device) for k, v in collate(self.lm, self.encode(elite)).items()}
            optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
            model.train()
            for _ in range(steps):
                loss = model(**batch).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            loss = float(loss.detach())
        model.eval()
        self._adapted = key
        return loss

    def candidates(self, elite: list[Cell], *, count: int, temperature: float, sample_top_k: int, adapt_steps: int,
                   adapt_lr: float, seed: int) -> list[Cell]:
        from archsweep.lm.sampling import sample
        from archsweep.stages.lm import generated_cells

        # One adaptation per elite set: a hotter resample of the same round reuses it.
        self.adapt(elite, adapt_steps, adapt_lr, seed=0)
        codes, _ = sample(self.lm, count, self.cfg.vqvae.codebook_size, temperature, sample_top_k, 1.0, seed,
                          constrained=self.cfg.sample.constrained)
        cells = [c for c in generated_cells(codes, self.vqvae, self.space) if c is not None and self.space.is_valid(c)]
        counts = Counter(c.to_string() for c in cells)
        first: dict[str, Cell] = {}
        for c in cells:
            first.setdefault(c.to_string(), c)
        return [first[s] for s, _ in counts.most_common()]
