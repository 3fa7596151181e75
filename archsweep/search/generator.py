"""The generator of LM-guided search: a trained VQ-VAE + LM prior, adapted to the best cells found so far and sampled.

Adaptation always starts from the prior's weights, so the generator's output depends only on its inputs (the elite
cells, the settings, the seed): a restarted search driver gets the same proposals, and several searches can share
one generator.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from archsweep.artifacts import load_lm, load_model
from archsweep.config import Config
from archsweep.decoding import encode_cells, generated_cells
from archsweep.layout import VQVAEStage, resolve_prior
from archsweep.lm.sampling import collate, log_likelihood, sample
from archsweep.spaces import Cell, get_space


class Generator:
    """Candidate cells from the prior: `candidates(elite, ...)` adapts the LM to the elite cells' codes, samples,
    decodes, and returns the distinct valid cells, most often sampled first; `log_likelihood(elite, cells, ...)`
    adapts it the same way and scores given cells instead (the LM's distribution restricted to them)."""

    def __init__(self, cfg: Config, vqvae_dir: str | Path, lm_dir: str | Path, device: str = "cpu"):
        self.cfg = cfg
        self.space = get_space(self.cfg.space)
        self.vqvae, _ = load_model(VQVAEStage(Path(vqvae_dir)).model)
        self.lm = load_lm(self.cfg, lm_dir)
        self.device = torch.device(device)
        self.lm.model.to(self.device)
        self.prior = {k: v.detach().clone() for k, v in self.lm.model.state_dict().items()}
        self._adapted: tuple | None = None  # what the weights are adapted to now
        self._codes: dict[str, tuple[int, ...]] = {}  # cells scored before, by their string

    @classmethod
    def from_prior(cls, prior: str | Path, device: str = "cpu") -> Generator:
        """The generator of a finished `archsweep run` or sweep-trial directory."""
        return cls(*resolve_prior(prior), device)

    def encode(self, cells: list[Cell]) -> list[tuple[int, ...]]:
        return [tuple(row) for row in encode_cells(self.vqvae, self.space, cells).tolist()]

    def adapt(self, elite: list[Cell], steps: int, lr: float, seed: int) -> float | None:
        """Start from the prior; fine-tune `steps` AdamW steps on the elite cells' codes. Returns the last loss."""
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

    def log_likelihood(self, elite: list[Cell], cells: list[Cell], *, adapt_steps: int, adapt_lr: float) -> np.ndarray:
        """Each cell's code sequence's log-probability under the LM adapted to `elite` (as `candidates` adapts it).
        A cell's codes are computed once and kept, so a search scoring the same table round after round encodes it
        once."""
        self.adapt(elite, adapt_steps, adapt_lr, seed=0)
        names = [c.to_string() for c in cells]
        missing = {n: c for n, c in zip(names, cells) if n not in self._codes}
        if missing:
            self._codes.update(zip(missing, self.encode(list(missing.values()))))
        return log_likelihood(self.lm, [self._codes[n] for n in names]).double().numpy()

    def candidates(self, elite: list[Cell], *, count: int, temperature: float, sample_top_k: int, adapt_steps: int,
                   adapt_lr: float, seed: int) -> list[Cell]:
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
