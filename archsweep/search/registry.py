"""From a config to a strategy: which strategy `search.strategy` names, and what it needs built for it (the LM
prior's generator, an encoder of cells)."""

from __future__ import annotations

from pathlib import Path

from archsweep.config import Config
from archsweep.errors import ArchsweepError
from archsweep.layout import VQVAEStage, find_model, resolve_prior
from archsweep.search.base import Domain, Strategy
from archsweep.search.encodings import CodeEncoder, Encoder
from archsweep.search.ranker import LMRanker
from archsweep.search.strategies import (BayesianOptimisation, LMGuided, RandomSearch, RegularizedEvolution, Reinforce,
                                         Surrogate)
from archsweep.spaces import get_space

STRATEGIES = ("lm_guided", "regularized_evolution", "random", "bo", "rl", "lm_ranker")


def uses_encoder(cfg: Config) -> bool:
    """Whether the strategy needs an encoder: a representation (bo, rl, lm_guided with its surrogate or explorer)
    or the VQ-VAE's code sequences (lm_ranker)."""
    s = cfg.search
    return s.strategy in ("bo", "rl", "lm_ranker") or (
        s.strategy == "lm_guided" and (s.lm_guided.surrogate or s.lm_guided.explore > 0))


def strategy_encoder(cfg: Config, vqvae_dir=None):
    """What `make_strategy` takes as `encoder` for this strategy (None where it needs none); `vqvae_dir` as in
    `representation_encoder`."""
    if not uses_encoder(cfg):
        return None
    if cfg.search.strategy != "lm_ranker":
        return representation_encoder(cfg, vqvae_dir)
    stage = Path(vqvae_dir) if vqvae_dir is not None else resolve_prior(cfg.search.lm_guided.prior)[1]
    return CodeEncoder(get_space(cfg.space), VQVAEStage(stage).model)


def representation_encoder(cfg: Config, vqvae_dir=None):
    """The `search.encoding` encoder of bo, rl and lm_guided's surrogate. `vqvae_dir`: the run's own VQ-VAE stage
    (a pipeline's search stage), used when `search.encoder` is empty; otherwise the prior's (vq) or
    `search.encoder`'s."""
    s, space = cfg.search, get_space(cfg.space)
    if s.encoding == "adjacency":
        return Encoder(space, "adjacency")
    if s.encoder:
        model = find_model(s.encoder)
    elif vqvae_dir is not None:
        model = VQVAEStage(Path(vqvae_dir)).model
    elif s.encoding == "vq" and s.lm_guided.prior:
        model = VQVAEStage(resolve_prior(s.lm_guided.prior)[1]).model
    else:
        raise ArchsweepError(f"search.encoding={s.encoding} needs a trained model: set search.encoder to a finished "
                             f"run directory trained with vqvae.model={'vqvae' if s.encoding == 'vq' else 'vae'}"
                             + (" (or search.lm_guided.prior to an LM prior run, whose VQ-VAE encodes)"
                                if s.encoding == "vq" else ""))
    return Encoder(space, s.encoding, model)


def needs_generator(cfg: Config) -> bool:
    """Whether the search samples the LM prior (lm_guided, lm_ranker, bo with its pool drawn from the prior)."""
    s = cfg.search
    return s.strategy in ("lm_guided", "lm_ranker") or (s.strategy == "bo" and s.bo.pool == "lm")


def make_strategy(cfg: Config, domain: Domain, generator=None, encoder=None) -> Strategy:
    """The strategy `cfg.search.strategy` names; `generator` samples candidate cells of the LM prior (lm_guided;
    lm_ranker; bo with search.bo.pool=lm); `encoder` (`strategy_encoder`: bo, rl, lm_guided's surrogate,
    lm_ranker) maps cells to the representation or code sequences they work with."""
    s = cfg.search
    if s.strategy == "random":
        return RandomSearch(domain)
    if s.strategy == "regularized_evolution":
        return RegularizedEvolution(domain, s.evolution.population, s.evolution.tournament)
    if needs_generator(cfg) and generator is None:
        raise ValueError(f"{s.strategy} needs a generator (the trained VQ-VAE + LM prior)")
    if s.strategy == "lm_guided" and not uses_encoder(cfg):
        return LMGuided(domain, generator, s.lm_guided)
    encoder = encoder or strategy_encoder(cfg)
    if s.strategy == "lm_ranker":
        return LMRanker(domain, generator, encoder, encoder.codebook_size, encoder.seq_len, s.lm_ranker, s.lm_guided,
                        s.seed)
    if s.strategy == "lm_guided":
        explorer = BayesianOptimisation(domain, encoder, s.bo, generator) if s.lm_guided.explore else None
        surrogate = None
        if s.lm_guided.surrogate:  # with an explorer, its surrogate: each cell is encoded once for both
            surrogate = explorer.surrogate if explorer else Surrogate(encoder, s.bo.fit_steps)
        return LMGuided(domain, generator, s.lm_guided, surrogate, s.bo.initial, explorer)
    if s.strategy == "bo":
        return BayesianOptimisation(domain, encoder, s.bo, generator)
    return Reinforce(domain, encoder, s.rl, s.seed)
