"""From a config to a running search: the strategy `search.strategy` names, with the encoder of cells it needs
built (what it needs is read from the config in `requirements.py`), run by the search loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from archsweep.config import Config
from archsweep.search.base import Candidate, Domain, Strategy
from archsweep.search.encodings import CodeEncoder, Encoder
from archsweep.search.loop import SearchState, search_loop, summarize
from archsweep.search.ranker import LMRanker
from archsweep.search.requirements import encoder_source, needs_generator, uses_encoder
from archsweep.search.strategies import (
    BayesianOptimisation,
    LMGuided,
    RandomSearch,
    RegularizedEvolution,
    Reinforce,
    Surrogate,
)
from archsweep.spaces import get_space


def strategy_encoder(cfg: Config, vqvae_dir=None):
    """What `make_strategy` takes as `encoder` for this strategy (None where it needs none): the encoder of
    `requirements.encoder_source`."""
    source = encoder_source(cfg, vqvae_dir)
    if source is None:
        return None
    kind, path = source
    space = get_space(cfg.space)
    return CodeEncoder(space, path) if kind == "codes" else Encoder(space, kind, path)


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


def run_search(cfg, benchmark, state_path: str | Path, evaluate: Callable[[list[Candidate]], list[dict]],
               budgets: Sequence[int], generator=None, encoder=None) -> dict:
    """Run (or continue) the search `cfg.search` describes, its state in `state_path`; its summary."""
    s = cfg.search
    state = SearchState.load(state_path)
    search_loop(state, make_strategy(cfg, Domain(benchmark), generator, encoder), evaluate, budget=s.budget,
                batch_size=s.batch_size, seed=s.seed)
    return summarize(state.history, benchmark, s.dataset or benchmark.datasets[0], budgets) | {
        "wall_s": state.wall_s, "strategy_s": state.strategy_s}
