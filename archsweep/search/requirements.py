"""What a search needs built for it, read from its config alone: the LM prior (`needs_generator`), an encoder of
cells (`uses_encoder`) and the trained model that encoder reads (`encoder_source`), with the checks of that model
that need no torch. A search file is checked with these when it is read; `registry.py` builds what they name."""

from __future__ import annotations

from pathlib import Path

from archsweep.config import Config
from archsweep.errors import ArchsweepError
from archsweep.layout import VQVAEStage, find_model, resolve_prior, saved_config

STRATEGIES = ("lm_guided", "regularized_evolution", "random", "bo", "rl", "lm_ranker")
# What an encoder reads -> the VQ-VAE stage's vqvae.model it needs ("codes": lm_ranker's code sequences).
MODEL_OF = {"vq": "vqvae", "vae": "vae", "codes": "vqvae"}


def needs_generator(cfg: Config) -> bool:
    """Whether the search samples the LM prior (lm_guided, lm_ranker, bo with its pool drawn from the prior)."""
    s = cfg.search
    return s.strategy in ("lm_guided", "lm_ranker") or (s.strategy == "bo" and s.bo.pool == "lm")


def uses_encoder(cfg: Config) -> bool:
    """Whether the strategy needs an encoder: a representation (bo, rl, lm_guided with its surrogate or explorer)
    or the VQ-VAE's code sequences (lm_ranker)."""
    s = cfg.search
    return s.strategy in ("bo", "rl", "lm_ranker") or (
        s.strategy == "lm_guided" and (s.lm_guided.surrogate or s.lm_guided.explore > 0))


def encoder_source(cfg: Config, vqvae_dir: str | Path | None = None) -> tuple[str, Path | None] | None:
    """(what the strategy's encoder reads: `search.encoding`, or "codes" for lm_ranker; the model.pt it reads, None
    for adjacency), or None where the strategy needs no encoder. `vqvae_dir`: the run's own VQ-VAE stage (a
    pipeline's search stage), used when `search.encoder` is empty; otherwise the prior's (vq) or `search.encoder`'s."""
    if not uses_encoder(cfg):
        return None
    s = cfg.search
    if s.strategy == "lm_ranker":
        stage = Path(vqvae_dir) if vqvae_dir is not None else resolve_prior(s.lm_guided.prior)[1]
        return "codes", VQVAEStage(stage).model
    if s.encoding == "adjacency":
        return "adjacency", None
    if s.encoder:
        return s.encoding, find_model(s.encoder)
    if vqvae_dir is not None:
        return s.encoding, VQVAEStage(Path(vqvae_dir)).model
    if s.encoding == "vq" and s.lm_guided.prior:
        return s.encoding, VQVAEStage(resolve_prior(s.lm_guided.prior)[1]).model
    raise ArchsweepError(f"search.encoding={s.encoding} needs a trained model: set search.encoder to a finished "
                         f"run directory trained with vqvae.model={MODEL_OF[s.encoding]}"
                         + (" (or search.lm_guided.prior to an LM prior run, whose VQ-VAE encodes)"
                            if s.encoding == "vq" else ""))


def require_model_file(path: str | Path | None, kind: str) -> None:
    if path is None or not Path(path).is_file():
        if kind == "codes":
            raise ArchsweepError(f"no VQ-VAE model at {path}")
        raise ArchsweepError(f"encoding {kind!r} needs a trained model: {path} is not a file (the model.pt of a "
                             f"VQ-VAE stage run with vqvae.model={MODEL_OF[kind]})")


def check_model_config(path: str | Path, kind: str, space: str, model_cfg: Config) -> None:
    """The model at `path`, trained with `model_cfg`, can serve `kind` on `space`."""
    if model_cfg.vqvae.model != MODEL_OF[kind]:
        needed = ("code sequences come from a vqvae.model=vqvae stage" if kind == "codes" else
                  f"encoding {kind!r} needs vqvae.model={MODEL_OF[kind]}")
        raise ArchsweepError(f"{path} is a vqvae.model={model_cfg.vqvae.model} stage; {needed}")
    if model_cfg.space != space:
        raise ArchsweepError(f"{path} was trained on {model_cfg.space}, not {space}")


def check_encoder_model(cfg: Config) -> None:
    """What can be checked of the strategy's encoder model without loading it: it is there, and the config its
    stage saved beside it says the right model on the right space."""
    source = encoder_source(cfg)
    if source is None or source[1] is None:
        return
    kind, path = source
    require_model_file(path, kind)
    if (saved := saved_config(path)) is not None:
        check_model_config(path, kind, cfg.space, saved)
