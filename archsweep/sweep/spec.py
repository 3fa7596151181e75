"""The sweep YAML: a base configuration (any `Config` key), plus the axes to sweep and how to run them.

    name: quick
    space: nasbench201            # base configuration: the same keys as a config file
    lm: {epochs: 8}
    sweep:                        # dotted config key -> search spec
      vqvae.codebook_size: {grid: [16, 64]}
      lm.name: {grid: [gpt2-tiny, llama-tiny]}
      lm.lr: {loguniform: [1e-4, 1e-3]}
    tune: {search: grid, scheduler: fifo, num_samples: 1, max_concurrent_trials: 0}
    # or Bayesian: every axis sampled, Optuna's TPE choosing each trial from the finished ones
    # tune: {search: optuna, num_samples: 24, metric: valid_unique, mode: max}
    tracking: {wandb: true, mode: offline, project: archsweep}

Everything is checked before anything starts: unknown keys (with a suggestion), wrong types, values out of
range (every grid/choice value is validated as if it were the base value), unknown search or scheduler names.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from archsweep.config import (
    ALL_KEYS,
    Config,
    ConfigError,
    absolute_patch,
    absolute_path,
    load_config,
    suggest_key,
    to_dict,
)
from archsweep.settings import absolute
from archsweep.specfile import TrackingSettings, check_tracking, patched, read_settings, read_spec_file, with_key

SPEC_KINDS = {  # name -> number of arguments (None: a non-empty list of values)
    "grid": None,
    "choice": None,
    "uniform": 2,
    "loguniform": 2,
    "randint": 2,
}
SEARCHES = ("grid", "random", "optuna")
SCHEDULERS = ("fifo", "asha", "async_hyperband")
# What the LM stage reports every epoch (archsweep/train/lm.py), which ASHA can stop trials on.
ASHA_METRICS = ("lm/heldout_loss", "lm/heldout_perplexity", "lm/loss")


@dataclass
class TuneSettings:
    search: str = "grid"  # grid: grid axes crossed, other axes sampled | random: every axis sampled
    #                       optuna: every axis sampled by Optuna's TPE from the finished trials (no grid axes)
    scheduler: str = "fifo"  # fifo: every trial runs to the end | asha: stop poor trials early
    #                          async_hyperband: ASHA over `brackets` brackets of different grace periods
    metric: str = "valid_unique"  # what the report ranks by (and random search's seeding is independent of it)
    mode: str = "max"
    scheduler_metric: str = "lm/heldout_loss"  # asha only: reported every LM epoch
    scheduler_mode: str = "min"
    grace_period: int = 2  # asha, async_hyperband: LM epochs before a trial may be stopped
    brackets: int = 3  # async_hyperband: brackets (1 is plain ASHA)
    num_samples: int = 1  # repeats of the grid (grid) or trials drawn (random)
    max_concurrent_trials: int = 0  # 0: as many as the cluster's CPUs/GPUs fit
    max_failures: int = 1  # times a failed trial is retried (from its stages' checkpoints)
    seed: int = 0  # random search's draws, Optuna's sampler
    time_budget_s: int = 0  # stop starting trials and end the sweep after this many seconds; 0: no limit
    reuse_actors: bool = True  # a trial starts in a finished trial's worker: its imports (~5 s) once per worker


@dataclass
class Sweep:
    name: str
    base: Config
    axes: dict[str, dict[str, list]]
    tune: TuneSettings = field(default_factory=TuneSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    storage: str = "runs/sweeps"
    extra_trials: list[dict] = field(default_factory=list)  # {dotted key: value} patches of the base
    source: str = ""

    def trial_count(self) -> int:
        """Trials in all: every grid combination and extra trial, `tune.num_samples` times."""
        return len(trial_configs(self)) * self.tune.num_samples

    def swept_keys(self) -> list[str]:
        """The keys whose values differ between trials: the axes, then the keys the extra trials set."""
        return list(dict.fromkeys([*self.axes, *(k for patch in self.extra_trials for k in patch)]))

    def spaces(self) -> set[str]:
        """The search spaces its trials run on (whose benchmark tables they read)."""
        return {c["space"] for c in trial_configs(self)} | set(self.axes.get("space", {}).get("choice", []))

    def to_dict(self) -> dict:
        return {"name": self.name, **to_dict(self.base), "sweep": self.axes, "extra_trials": self.extra_trials,
                "tune": asdict(self.tune), "tracking": asdict(self.tracking), "storage": self.storage}


SECTIONS = {"name", "sweep", "extra_trials", "tune", "tracking", "storage"}


def _check_axis(key: str, spec: Any, base: dict, source: str) -> dict[str, list]:
    where = f"{source}: sweep axis {key!r}"
    if key not in ALL_KEYS:
        raise ConfigError(f"{source}: unknown sweep key {key!r}{suggest_key(key)}")
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where} must be one search spec, e.g. {{grid: [16, 64]}}; allowed kinds: "
                          f"{', '.join(SPEC_KINDS)}")
    (kind, args), = spec.items()
    if kind not in SPEC_KINDS:
        raise ConfigError(f"{where}: unknown search spec {kind!r}; allowed: {', '.join(SPEC_KINDS)}")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: {kind} takes a non-empty list, e.g. {{{kind}: [1, 2]}}")
    if SPEC_KINDS[kind] is None:
        args = [absolute_path(key, value) for value in args]
        for value in args:  # each value must make a valid configuration on its own
            with_key(base, key, value, f"{where}: value {value!r}")
        return {kind: list(args)}
    if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"{where}: {kind} takes [low, high] numbers; got {args!r}")
    low, high = args
    if not low < high:
        raise ConfigError(f"{where}: {kind} needs low < high; got {args!r}")
    if ALL_KEYS[key] == "int" and kind != "randint":
        raise ConfigError(f"{where} is an int key: use randint, grid or choice, not {kind}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform needs low > 0; got {low}")
    for value in (low, high - 1 if kind == "randint" else high):
        with_key(base, key, value, f"{where}: bound {value!r}")
    return {kind: [low, high]}


def load_sweep(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    """Read and check a sweep YAML; `overrides` (`key=value`) apply to the base configuration, or to
    `tune.*`, `tracking.*`, `name` and `storage`."""
    path = Path(path)
    source = str(path)
    raw, sections, base_overrides, name = read_spec_file(path, overrides, SECTIONS, ("tune", "tracking"), "sweep")
    base = load_config(overrides=base_overrides, data=raw, source=source)
    axes_raw = sections.get("sweep") or {}
    if not isinstance(axes_raw, dict):
        raise ConfigError(f"{source}: 'sweep' must map config keys to search specs, e.g. "
                          "vqvae.codebook_size: {grid: [16, 64]}")
    axes = {key: _check_axis(key, spec, to_dict(base), source) for key, spec in axes_raw.items()}
    extra = sections.get("extra_trials") or []
    if not isinstance(extra, list) or not all(isinstance(e, dict) and e for e in extra):
        raise ConfigError(f"{source}: 'extra_trials' is a list of trials, each a mapping of config keys to values, "
                          "e.g. [{vqvae.model: vae}]")
    if extra and any("grid" not in spec for spec in axes.values()):
        raise ConfigError(f"{source}: 'extra_trials' needs every sweep axis to be a grid (the trials are listed "
                          "one by one)")
    extra = [absolute_patch(patch) for patch in extra]
    for i, patch in enumerate(extra):
        config = to_dict(base)
        for key, value in patch.items():
            if key not in ALL_KEYS:
                raise ConfigError(f"{source}: extra_trials[{i}]: unknown config key {key!r}{suggest_key(key)}")
            config = to_dict(with_key(config, key, value, f"{source}: extra_trials[{i}]: {key}={value!r}"))
    tune = read_settings(TuneSettings, sections.get("tune"), "tune", source)
    tracking = read_settings(TrackingSettings, sections.get("tracking"), "tracking", source)
    check_settings(tune, tracking, source)
    sweep = Sweep(name=name, base=base, axes=axes, tune=tune, tracking=tracking,
                  storage=str(absolute(sections.get("storage") or "runs/sweeps")), extra_trials=extra, source=source)
    if tune.search == "optuna":
        _check_model_based(sweep, "optuna")
    models = {c["vqvae"]["model"] for c in trial_configs(sweep)} | set(axes.get("vqvae.model", {}).get("choice", []))
    if tune.scheduler != "fifo" and "vae" in models:
        raise ConfigError(f"{source}: 'tune.scheduler' {tune.scheduler} stops trials on the LM's held-out loss, which "
                          "the VAE baseline (vqvae.model=vae) has not; use scheduler fifo for a sweep with it")
    return sweep


def check_settings(tune: TuneSettings, tracking: TrackingSettings, source: str) -> None:
    if tune.search not in SEARCHES:
        raise ConfigError(f"{source}: 'tune.search' is {tune.search!r}; allowed: {', '.join(SEARCHES)}")
    if tune.scheduler not in SCHEDULERS:
        raise ConfigError(f"{source}: 'tune.scheduler' is {tune.scheduler!r}; allowed: {', '.join(SCHEDULERS)}")
    if tune.scheduler != "fifo" and tune.scheduler_metric not in ASHA_METRICS:
        raise ConfigError(f"{source}: 'tune.scheduler_metric' is {tune.scheduler_metric!r}; allowed with "
                          f"{tune.scheduler} (what "
                          f"the LM reports every epoch): {', '.join(ASHA_METRICS)}")
    for key in ("mode", "scheduler_mode"):
        if getattr(tune, key) not in ("min", "max"):
            raise ConfigError(f"{source}: 'tune.{key}' is {getattr(tune, key)!r}; allowed: min, max")
    for key in ("num_samples", "grace_period", "brackets"):
        if getattr(tune, key) < 1:
            raise ConfigError(f"{source}: 'tune.{key}' is {getattr(tune, key)}; allowed: >= 1")
    if tune.max_concurrent_trials < 0:
        raise ConfigError(f"{source}: 'tune.max_concurrent_trials' is {tune.max_concurrent_trials}; "
                          "allowed: >= 0 (0: as many as fit)")
    if tune.time_budget_s < 0:
        raise ConfigError(f"{source}: 'tune.time_budget_s' is {tune.time_budget_s}; allowed: >= 0 (0: no limit)")
    if tune.max_failures < -1:
        raise ConfigError(f"{source}: 'tune.max_failures' is {tune.max_failures}; allowed: >= -1 (-1: unlimited)")
    check_tracking(tracking, source)


def _check_model_based(sweep: Sweep, search: str) -> None:
    """A model-based searcher chooses every value itself, from distributions it can model: no grid, no list."""
    source = sweep.source
    for key, spec in sweep.axes.items():
        if "grid" in spec:
            raise ConfigError(f"{source}: sweep axis {key!r} is a grid, which 'tune.search: {search}' cannot "
                              f"search (it samples every axis); write it {{choice: {spec['grid']}}}, or use "
                              "tune.search: grid")
    if sweep.extra_trials:
        raise ConfigError(f"{source}: 'extra_trials' lists trials one by one, which 'tune.search: {search}' cannot "
                          "choose from; run them in a sweep with tune.search: grid")
    if not sweep.axes:
        raise ConfigError(f"{source}: 'tune.search: {search}' needs at least one sweep axis to search")


def max_lm_epochs(sweep: Sweep) -> int:
    """The most LM epochs any trial of the sweep can run (what a scheduler's `max_t` must reach)."""
    epochs = [c["lm"]["epochs"] for c in trial_configs(sweep)]
    spec = sweep.axes.get("lm.epochs", {})
    (kind, args), = spec.items() if spec else ((None, []),)
    epochs += list(args) if kind in ("grid", "choice") else [args[1] - 1] if kind == "randint" else []
    return max(epochs)


def trial_configs(sweep: Sweep) -> list[dict]:
    """Every grid combination, then the extra trials, as plain config dicts (sampled axes left at the base)."""
    grid = {k: v["grid"] for k, v in sweep.axes.items() if "grid" in v}
    base = to_dict(sweep.base)
    out = [patched(base, dict(zip(grid, values))) for values in itertools.product(*grid.values())]
    return out + [patched(base, patch) for patch in sweep.extra_trials]
