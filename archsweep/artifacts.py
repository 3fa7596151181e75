"""Saving and loading what a finished stage leaves behind: the VQ-VAE (or VAE) model and the LM. Stages write them,
the search and the reports read them, through these functions only."""

from __future__ import annotations

from pathlib import Path

import torch

from archsweep.checkpoint import torch_load, unreadable
from archsweep.config import Config, from_dict, to_dict
from archsweep.lm.models import PRETRAINED, LanguageModel, build, load_lora
from archsweep.models.vqvae import build_model
from archsweep.spaces import get_space


def new_model(cfg: Config):
    """An untrained VQ-VAE (or VAE) shaped for `cfg.space`."""
    space = get_space(cfg.space)
    return build_model(cfg.vqvae, len(space.op_vocab), space.max_vertices)


def save_model(model, cfg: Config, path: str | Path) -> None:
    """`model.pt`: the weights and the config that shaped them."""
    torch.save({"config": to_dict(cfg), "model": model.state_dict()}, path)


def load_model(path: str | Path):
    """(model in eval mode, its Config) from a `model.pt` written by `save_model`."""
    path = Path(path)
    state = torch_load(path, fix=f"Delete {path.parent} and run the VQ-VAE stage again.")
    cfg = from_dict(state["config"])
    model = new_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def load_lm(cfg: Config, lm_dir: str | Path) -> LanguageModel:
    """The trained LM a finished stage saved (`<stage>/lm`), to sample again without retraining."""
    fix = f"Delete {Path(lm_dir).parent} and run the LM stage again."
    if cfg.lm.lora.rank:  # the adapters alone were saved: the base model comes from where it came from in training
        lm = build(cfg.lm.name, cfg.vqvae.codebook_size, cfg.vqvae.seq_len)
        try:
            load_lora(lm, lm_dir)
        except Exception as exc:
            raise unreadable(lm_dir, exc, fix) from None
        return lm
    if cfg.lm.name.startswith(PRETRAINED):
        lm = build(PRETRAINED + str(lm_dir), cfg.vqvae.codebook_size, cfg.vqvae.seq_len)
        lm.name = cfg.lm.name
        return lm
    lm = build(cfg.lm.name, cfg.vqvae.codebook_size, cfg.vqvae.seq_len)
    try:
        lm.model = type(lm.model).from_pretrained(lm_dir)
    except Exception as exc:  # a missing or cut-off weights file
        raise unreadable(lm_dir, exc, fix) from None
    return lm


def save_lm(lm: LanguageModel, lm_dir: str | Path) -> None:
    lm.model.save_pretrained(lm_dir)
    if lm.pretrained:
        lm.tokenizer.save_pretrained(lm_dir)
