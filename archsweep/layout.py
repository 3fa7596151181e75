"""Where a run keeps its stages: the one description of the run-directory layout, read by every floor above.

    <run>/vqvae/model.pt       the VQ-VAE stage (a sweep trial's lives in the sweep's `artifacts/`, shared)
    <run>/vqvae/codes.npz
    <run>/lm/lm/               the LM, in `transformers` format
    <run>/lm/samples.npz
    <run>/lm/generated.json    the first samples one by one, for W&B's table
    <run>/search/state.jsonl   with `search.enabled`
    <run>/metrics.json         every stage's metrics; a sweep trial's also names its shared VQ-VAE stage

No torch here: checking that a prior exists is part of reading a config file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from archsweep.config import Config, from_dict
from archsweep.errors import ArchsweepError

METRICS = "metrics.json"


@dataclass(frozen=True)
class Stage:
    """A stage's directory; `metrics.json` is written last, so a stage that has it has finished."""

    dir: Path

    @property
    def metrics(self) -> Path:
        return self.dir / METRICS

    def finished(self) -> bool:
        return self.metrics.is_file()


class VQVAEStage(Stage):
    """A VQ-VAE stage: `model.pt` (weights + config), `codes.npz` (every cell's codes or latents)."""

    @property
    def model(self) -> Path:
        return self.dir / "model.pt"

    @property
    def codes(self) -> Path:
        return self.dir / "codes.npz"


class LMStage(Stage):
    """An LM stage: the model in `transformers` format under `lm/`, its samples."""

    @property
    def model(self) -> Path:
        return self.dir / "lm"

    @property
    def samples(self) -> Path:
        return self.dir / "samples.npz"

    @property
    def generated(self) -> Path:
        """The first samples one by one (codes, cell, valid, novel, accuracy), for a table of them."""
        return self.dir / "generated.json"

    def finished(self) -> bool:
        return self.model.is_dir() and super().finished()


@dataclass(frozen=True)
class RunDir:
    """One pipeline run (`archsweep run`'s output directory, or a sweep trial's directory). `shared_vqvae`: the
    VQ-VAE stage it uses when that lives elsewhere (a sweep's `artifacts/vqvae-<key>`)."""

    root: Path
    shared_vqvae: Path | None = None

    @property
    def vqvae(self) -> VQVAEStage:
        return VQVAEStage(self.shared_vqvae or self.root / "vqvae")

    @property
    def lm(self) -> LMStage:
        return LMStage(self.root / "lm")

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def metrics(self) -> Path:
        return self.root / METRICS

    @classmethod
    def finished(cls, root: str | Path) -> RunDir:
        """A run directory as its run left it: a sweep trial's metrics name the shared VQ-VAE stage it used."""
        root = Path(root)
        own = cls(root)
        if not own.vqvae.model.is_file() and own.metrics.is_file():
            shared = json.loads(own.metrics.read_text()).get("vqvae_dir")
            if shared:
                return cls(root, Path(shared))
        return own


def resolve_prior(path: str | Path) -> tuple[Config, Path, Path]:
    """(config, VQ-VAE stage dir, LM model dir) of a finished `archsweep run` directory or sweep trial directory."""
    run = RunDir.finished(path)
    if not run.lm.finished():
        raise ArchsweepError(f"search.lm_guided.prior: {run.root} holds no finished LM stage (expected "
                             f"{run.lm.model} and {run.lm.metrics}); give the directory of a finished `archsweep run` "
                             "or of a sweep trial with vqvae.model=vqvae")
    cfg = from_dict(json.loads(run.lm.metrics.read_text())["config"])
    if not run.vqvae.model.is_file():
        raise ArchsweepError(f"search.lm_guided.prior: no VQ-VAE model for {run.root} (looked for {run.vqvae.model})")
    return cfg, run.vqvae.dir, run.lm.model


def find_model(path: str | Path) -> Path:
    """The VQ-VAE (or VAE) model a `search.encoder` names: a model.pt, a stage directory or a run directory."""
    root = Path(path)
    candidates = (root, VQVAEStage(root).model, RunDir.finished(root).vqvae.model)
    return next((p for p in candidates if p.is_file()), root)


def saved_config(model_path: str | Path) -> Config | None:
    """The config a VQ-VAE stage saved beside its model.pt (in its metrics.json), or None where there is none."""
    metrics = VQVAEStage(Path(model_path).parent).metrics
    if not metrics.is_file():
        return None
    try:
        return from_dict(json.loads(metrics.read_text())["config"])
    except (ValueError, KeyError, TypeError, ArchsweepError):
        return None
