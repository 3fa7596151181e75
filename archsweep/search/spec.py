"""The search YAML: a base configuration (any `Config` key; `search.*` sets the search), the strategies, datasets
and seeds to run it for, and where to write it.

    name: nb201-search
    space: nasbench201
    search: {budget: 200, batch_size: 10, lm_guided: {prior: runs/pipeline}}
    searches:
      strategies:                 # label -> config patch; a label that names a strategy runs that strategy
        lm_guided: {}
        regularized_evolution: {search.batch_size: 1}
        random: {}
      datasets: [cifar10, cifar100, ImageNet16-120]
      seeds: 20                   # search.seed, search.seed + 1, ...
      report_budgets: [50, 100, 200]
    tracking: {wandb: true, mode: offline, project: archsweep}
    storage: runs/searches

Checked before anything starts, like sweep files: unknown keys with a suggestion, wrong types, out-of-range values,
a missing prior for lm_guided.
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from archsweep.benchmarks import DATASETS, require_table
from archsweep.config import ALL_KEYS, Config, ConfigError, absolute_patch, from_dict, load_config, suggest_key, to_dict
from archsweep.errors import ArchsweepError, did_you_mean
from archsweep.layout import resolve_prior
from archsweep.search.requirements import STRATEGIES, check_encoder_model, needs_generator
from archsweep.settings import absolute
from archsweep.specfile import TrackingSettings, check_tracking, patched, read_settings, read_spec_file, with_key


@dataclass
class SearchSettings:
    strategies: dict = field(default_factory=lambda: {s: {} for s in STRATEGIES})
    datasets: list = field(default_factory=list)  # empty: the config's search.dataset
    seeds: int = 1
    report_budgets: list = field(default_factory=lambda: [50, 100, 200])
    max_concurrent: int = 0  # searches running at once; 0: twice the cluster's CPUs
    evaluators: int = 2  # evaluator actors, shared by all searches
    generators: int = 1  # generator actors per LM prior, shared by the lm_guided searches


@dataclass
class SearchFile:
    name: str
    base: Config
    searches: SearchSettings
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    storage: str = "runs/searches"
    source: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, **to_dict(self.base), "searches": asdict(self.searches),
                "tracking": asdict(self.tracking), "storage": self.storage}

    def spaces(self) -> set[str]:
        """The search space its searches run on (whose benchmark table they query)."""
        return {self.base.space}

    def runs(self) -> list[tuple[str, Config]]:
        """(run id, config) of every strategy x dataset x seed, in that order."""
        out = []
        for label, patch in self.searches.strategies.items():
            config = patched(to_dict(self.base), _strategy_patch(label, patch))
            for dataset in self.searches.datasets or [self.base.search.dataset or DATASETS[self.base.space][0]]:
                checked = from_dict(patched(config, {"search.dataset": dataset}))  # then copied for each seed
                for k in range(self.searches.seeds):
                    cfg = copy.deepcopy(checked)
                    cfg.search.seed = self.base.search.seed + k
                    out.append((f"{label}-{dataset}-s{cfg.search.seed}", cfg))
        return out


SECTIONS = {"name", "searches", "tracking", "storage"}


def _strategy_patch(label: str, patch: dict) -> dict:
    return ({"search.strategy": label} if label in STRATEGIES else {}) | dict(patch or {})


def load_search_file(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (),
                     check_prior: bool = True) -> SearchFile:
    """Read and check a search YAML; `overrides` (`key=value`) apply to the base configuration, or to
    `searches.*`, `tracking.*`, `name` and `storage`. `check_prior=False`: lm_guided's prior is not there yet
    (the reproduction report trains it first; `check_models` checks later)."""
    path = Path(path)
    source = str(path)
    raw, sections, base_overrides, name = read_spec_file(path, overrides, SECTIONS, ("searches", "tracking"),
                                                         "search")
    base = load_config(overrides=base_overrides, data=raw, source=source)
    try:
        require_table(base.space)
    except ArchsweepError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    searches = _searches(sections.get("searches"), source)
    tracking = read_settings(TrackingSettings, sections.get("tracking"), "tracking", source)
    check_tracking(tracking, source)
    searches.strategies = {label: absolute_patch(patch or {}) for label, patch in searches.strategies.items()}
    spec = SearchFile(name, base, searches, tracking, str(absolute(sections.get("storage") or "runs/searches")),
                      source)
    for label, patch in searches.strategies.items():
        where = f"{source}: searches.strategies.{label}"
        config = to_dict(base)
        for key, value in _strategy_patch(label, patch).items():
            if key not in ALL_KEYS:
                raise ConfigError(f"{where}: unknown config key {key!r}{suggest_key(key)}")
            config = to_dict(with_key(config, key, value, f"{where}: {key}={value!r}"))
        if "search.strategy" not in _strategy_patch(label, patch):
            raise ConfigError(f"{where}: {label!r} is not a strategy ({', '.join(STRATEGIES)}); name one with "
                              "search.strategy in its patch")
        for dataset in searches.datasets:
            with_key(config, "search.dataset", dataset, f"{source}: searches.datasets")
    if check_prior:
        check_models(spec)
    return spec


def check_models(spec: SearchFile) -> None:
    """The trained models each strategy of the file needs are there (a file cut to some strategies checks only
    theirs)."""
    for label, patch in spec.searches.strategies.items():
        config = patched(to_dict(spec.base), _strategy_patch(label, patch))
        _check_models(from_dict(config), f"{spec.source}: searches.strategies.{label}")


def _searches(data, source: str) -> SearchSettings:
    if data is None:
        return SearchSettings()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: 'searches' must be a mapping of settings")
    known = set(SearchSettings.__dataclass_fields__)
    for key in data:
        if key not in known:
            hint = did_you_mean(key, known, "searches.")
            raise ConfigError(f"{source}: unknown key 'searches.{key}'{hint} (allowed: {', '.join(sorted(known))})")
    s = SearchSettings(**data)
    if not isinstance(s.strategies, dict) or not s.strategies or \
            not all(isinstance(p, dict) or p is None for p in s.strategies.values()):
        raise ConfigError(f"{source}: 'searches.strategies' maps labels to config patches, e.g. "
                          "{lm_guided: {}, regularized_evolution: {search.batch_size: 1}}")
    if not isinstance(s.datasets, list) or not all(isinstance(d, str) for d in s.datasets):
        raise ConfigError(f"{source}: 'searches.datasets' is a list of dataset names")
    for key in ("seeds", "evaluators", "generators"):
        value = getattr(s, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{source}: 'searches.{key}' must be an int >= 1; got {value!r}")
    if not isinstance(s.max_concurrent, int) or s.max_concurrent < 0:
        raise ConfigError(f"{source}: 'searches.max_concurrent' must be an int >= 0 (0: as many as fit)")
    if not isinstance(s.report_budgets, list) or not s.report_budgets or \
            not all(isinstance(b, int) and b >= 1 for b in s.report_budgets):
        raise ConfigError(f"{source}: 'searches.report_budgets' is a list of query counts >= 1, e.g. [50, 100, 200]")
    return s


def _check_models(cfg: Config, where: str) -> None:
    """The trained models a strategy needs are there: the LM prior (lm_guided, lm_ranker, bo from the prior), the
    encoder (bo, rl and lm_guided's surrogate in a learned representation; lm_ranker's VQ-VAE)."""
    s = cfg.search
    try:
        if needs_generator(cfg):
            if not s.lm_guided.prior:
                raise ArchsweepError(f"{s.strategy} needs 'search.lm_guided.prior', the directory of a finished "
                                     "`archsweep run` or sweep trial (its VQ-VAE and LM)")
            resolve_prior(s.lm_guided.prior)
        check_encoder_model(cfg)
    except ArchsweepError as exc:
        raise ConfigError(f"{where}: {exc}") from None
